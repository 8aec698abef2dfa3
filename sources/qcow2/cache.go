package qcow2

import (
	"sync"
)

// table is one cached metadata cluster: an L2 table or a refcount block.
// Its bytes are those on disk (big-endian entries), decoded on access, so a
// cache hit costs a map lookup and nothing is allocated.
//
// data is only modified while the image's metadata lock is held for
// writing; readers holding it for reading may use data without further
// locking.
type table struct {
	off   int64
	data  []byte
	used  bool // CLOCK reference bit, under tableCache.mu
	dirty bool // modified in memory, not yet written; never evicted
}

// tableCache keeps up to max tables of one kind, evicting clean ones in
// CLOCK order. Dirty tables stay until written (the image flushes its
// metadata when too many are dirty, see Image.maybeFlushMeta).
type tableCache struct {
	mu    sync.Mutex
	m     map[int64]*table
	ring  []*table
	hand  int
	max   int
	dirty int
}

func newTableCache(max int) *tableCache {
	return &tableCache{m: make(map[int64]*table, max), max: max}
}

// get returns the cached table at off, or nil.
func (c *tableCache) get(off int64) *table {
	c.mu.Lock()
	t := c.m[off]
	if t != nil {
		t.used = true
	}
	c.mu.Unlock()
	return t
}

// put inserts t unless a table at t.off is cached already, which it then
// returns instead (two readers loaded the same table at once).
func (c *tableCache) put(t *table) *table {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[t.off]; old != nil {
		old.used = true
		return old
	}
	for len(c.ring) >= c.max && c.evictLocked() {
	}
	t.used = true
	c.m[t.off] = t
	c.ring = append(c.ring, t)
	if t.dirty {
		c.dirty++
	}
	return t
}

// evictLocked drops one clean table; false if every table is dirty.
func (c *tableCache) evictLocked() bool {
	for range 2 * len(c.ring) {
		if c.hand >= len(c.ring) {
			c.hand = 0
		}
		t := c.ring[c.hand]
		if t.dirty {
			c.hand++
			continue
		}
		if t.used {
			t.used = false
			c.hand++
			continue
		}
		delete(c.m, t.off)
		last := len(c.ring) - 1
		c.ring[c.hand] = c.ring[last]
		c.ring[last] = nil
		c.ring = c.ring[:last]
		return true
	}
	return false
}

// markDirty records that t was modified in memory. If t was evicted
// meanwhile (or replaced by a fresh copy read from disk), it goes back in,
// replacing the copy: t has the newer bytes.
func (c *tableCache) markDirty(t *table) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.m[t.off]; cur != t {
		if cur != nil {
			c.removeLocked(cur)
		}
		t.dirty = false
		c.m[t.off] = t
		c.ring = append(c.ring, t)
	}
	if !t.dirty {
		t.dirty = true
		c.dirty++
	}
}

func (c *tableCache) removeLocked(t *table) {
	if t.dirty {
		c.dirty--
	}
	delete(c.m, t.off)
	for i, r := range c.ring {
		if r == t {
			last := len(c.ring) - 1
			c.ring[i] = c.ring[last]
			c.ring[last] = nil
			c.ring = c.ring[:last]
			break
		}
	}
}

// dirtyTables returns the dirty tables (without clearing them).
func (c *tableCache) dirtyTables() []*table {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ts []*table
	for _, t := range c.ring {
		if t.dirty {
			ts = append(ts, t)
		}
	}
	return ts
}

// clean marks t written.
func (c *tableCache) clean(t *table) {
	c.mu.Lock()
	if t.dirty {
		t.dirty = false
		c.dirty--
	}
	c.mu.Unlock()
}

func (c *tableCache) dirtyCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dirty
}
