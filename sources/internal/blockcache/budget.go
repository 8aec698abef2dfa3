package blockcache

// admit reports whether a decode of seg that must reach rel can start
// within the budget, evicting what it can to make room. A decoder that
// would not fit waits for running ones to end; when none runs, it starts
// anyway (the budget is then exceeded by that one decoder). Resuming a
// parked decoder needs no new memory. c.mu is held.
func (c *Cache) admit(seg int, rel int64) bool {
	if cur := c.parked[seg]; cur != nil && cur.pos <= rel {
		return true
	}
	mem := c.segs.Segment(seg).Mem + min(c.chunk, c.segs.Segment(seg).Size)
	for c.used+mem > c.budget {
		if back := c.lru.Back(); back != nil {
			e := back.Value.(*entry)
			if c.wanted[e.key] == 0 && e.refs == 0 {
				c.remove(e)
				continue
			}
		}
		if back := c.plru.Back(); back != nil {
			c.unpark(back.Value.(*cursor))
			continue
		}
		break
	}
	if c.used+mem <= c.budget {
		return true
	}
	return len(c.jobs) == 0
}

func (c *Cache) peak() {
	if c.used > c.stats.Peak {
		c.stats.Peak = c.used
	}
}

// recharge charges the memory a new decoder reports (MemReader) instead of
// its segment's estimate, waiting for room as admit would: evicting what
// it can, then waiting for other decoders to end, unless none runs that is
// not itself waiting. c.mu is held.
func (c *Cache) recharge(cur *cursor) {
	m, ok := cur.r.(MemReader)
	if !ok {
		return
	}
	mem := max(m.Mem(), 0)
	extra := mem - cur.mem
	c.used += extra
	cur.mem = mem
	if extra <= 0 {
		return
	}
	c.used -= extra
	for {
		c.reserveEvict(extra)
		if c.used+extra <= c.budget || c.closed || len(c.jobs)-1-c.memWait <= 0 {
			break
		}
		c.memWait++
		c.cond.Wait()
		c.memWait--
	}
	c.used += extra
	c.peak()
}

// reserveEvict evicts unwanted chunks, then parked decoders, until n more
// bytes fit in the budget (and in the pool: other Caches evict first, see
// poolRoom) or nothing more can go. c.mu is held.
func (c *Cache) reserveEvict(n int64) {
	if c.over(n) {
		c.poolRoom(n)
	}
	c.evictUntil(func() bool { return c.used+n <= c.budget && !c.over(n) })
}

// evictUntil evicts c's chunks that no reader waits for or holds pinned,
// least recently used first, then its parked decoders, until fits says so or nothing more
// can go. c.mu is held.
func (c *Cache) evictUntil(fits func() bool) {
	for skipped := 0; !fits(); {
		if back := c.lru.Back(); back != nil && skipped < c.lru.Len() {
			e := back.Value.(*entry)
			if c.wanted[e.key] > 0 || e.refs > 0 {
				c.lru.MoveToFront(e.elem)
				skipped++
				continue
			}
			c.remove(e)
			continue
		}
		if back := c.plru.Back(); back != nil {
			c.unpark(back.Value.(*cursor))
			continue
		}
		return
	}
}

// reserve makes room for n more bytes within the budget, evicting the least
// recently used chunks, then parked decoders, and charges n. c.mu is held.
func (c *Cache) reserve(n int64) {
	// Over budget after this: the decoders readers wait on must go on.
	c.reserveEvict(n)
	c.used += n
	c.peak()
	c.account()
}

func (c *Cache) insert(key ckey, data []byte, n int64) {
	if old := c.chunks[key]; old != nil {
		c.remove(old)
	}
	e := &entry{key: key, data: data, n: n}
	if data == nil {
		e.n = 0
	}
	c.reserve(e.n)
	e.elem = c.lru.PushFront(e)
	c.chunks[key] = e
}

// remove drops e from the cache. A pinned e stays charged until its last
// unpin; an unpinned one's buffer becomes the spare when a decode asked
// to keep one (c.keep). c.mu is held.
func (c *Cache) remove(e *entry) {
	c.lru.Remove(e.elem)
	delete(c.chunks, e.key)
	if e.refs > 0 {
		e.gone = true
		return
	}
	if c.keep && c.spare == nil && int64(cap(e.data)) == c.chunk {
		c.spare = e.data
	}
	c.used -= e.n
	c.account()
}

// unpin ends a pin that get or Lend took on e. The last unpin of an entry
// dropped while pinned frees its memory. c.mu is not held.
func (c *Cache) unpin(e *entry) {
	c.mu.Lock()
	c.unpinLocked(e)
	c.mu.Unlock()
}

func (c *Cache) unpinLocked(e *entry) {
	if e.refs--; e.refs == 0 && e.gone && !c.closed {
		c.used -= e.n
		c.account()
		c.cond.Broadcast()
	}
}

func (c *Cache) park(cur *cursor) {
	if old := c.parked[cur.seg]; old != nil {
		c.unpark(old)
	}
	cur.elem = c.plru.PushFront(cur)
	c.parked[cur.seg] = cur
	for c.plru.Len() > maxParked {
		c.unpark(c.plru.Back().Value.(*cursor))
	}
}

func (c *Cache) unpark(cur *cursor) {
	c.plru.Remove(cur.elem)
	delete(c.parked, cur.seg)
	c.used -= cur.mem
	go cur.close()
}
