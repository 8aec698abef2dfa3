package blockcache

import "sync"

// Pool is a memory budget that many Caches share (every object one
// device fetches: an image, its backing files, its extents): the chunks
// of all of them stay within the Pool's limit, whatever their number. A
// Cache that needs room evicts from the Cache that holds the most (itself
// included), the chunks no reader waits for, least recently used first.
// A Pool is safe for concurrent use.
type Pool struct {
	limit int64
	mu    sync.Mutex
	used  int64
	peak  int64
	held  map[*Cache]int64
}

// NewPool returns a Pool of limit bytes (DefaultBudget if limit is 0 or
// less).
func NewPool(limit int64) *Pool {
	if limit <= 0 {
		limit = DefaultBudget
	}
	return &Pool{limit: limit, held: make(map[*Cache]int64)}
}

// PoolStats are a Pool's counters.
type PoolStats struct {
	Limit  int64
	Used   int64 // bytes held now by the Caches
	Peak   int64 // the largest Used seen
	Caches int   // Caches open
}

// Stats returns the counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{Limit: p.limit, Used: p.used, Peak: p.peak, Caches: len(p.held)}
}

// Limit is the Pool's limit in bytes.
func (p *Pool) Limit() int64 { return p.limit }

// account brings what c holds in its pool up to date. c.mu is held.
func (c *Cache) account() {
	p := c.pool
	if p == nil || c.used == c.charged {
		return
	}
	p.mu.Lock()
	p.used += c.used - c.charged
	p.held[c] = c.used
	p.peak = max(p.peak, p.used)
	p.mu.Unlock()
	c.charged = c.used
}

// over reports whether n more bytes of c would not fit in its pool.
// c.mu is held.
func (c *Cache) over(n int64) bool {
	if c.pool == nil {
		return false
	}
	c.account()
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used+n > p.limit
}

// poolRoom makes room for n more bytes of c in its pool: it evicts from
// the other Caches that hold more than c, the largest first, as long as
// they are not busy (one whose lock is taken is passed over: c may not
// wait for it). c.mu is held; what c itself can give, reserveEvict
// evicts.
func (c *Cache) poolRoom(n int64) {
	p := c.pool
	tried := map[*Cache]bool{c: true}
	for c.over(n) {
		p.mu.Lock()
		var victim *Cache
		most := c.used
		for o, h := range p.held {
			if !tried[o] && h > most {
				victim, most = o, h
			}
		}
		p.mu.Unlock()
		if victim == nil {
			return
		}
		tried[victim] = true
		if !victim.mu.TryLock() {
			continue
		}
		victim.shed(n)
		victim.mu.Unlock()
	}
}

// shed evicts c's chunks that no reader waits for, least recently used
// first, then its parked decoders, until n more bytes fit in its pool or
// nothing more can go. c.mu is held.
func (c *Cache) shed(n int64) {
	c.evictUntil(func() bool { return !c.over(n) })
}

// leave takes c out of its pool. c.mu is held.
func (c *Cache) leave() {
	p := c.pool
	if p == nil {
		return
	}
	p.mu.Lock()
	p.used -= c.charged
	delete(p.held, c)
	p.mu.Unlock()
	c.charged = 0
}
