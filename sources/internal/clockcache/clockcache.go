package clockcache

// Cache is a CLOCK cache of values of type V under keys of type K. Create
// one with New; see the package documentation for its rules.
type Cache[K comparable, V any] struct {
	slots []slot[K, V]
	index map[K]int32 // key -> slot of a live entry
	free  []int32     // slots without an entry, below len(slots)
	live  int         // entries
	dirty int         // dirty entries
	hand  int         // next slot the clock looks at
	limit int         // most entries, unless all are dirty
	grow  func() bool // asked before each slot after the first; nil: yes
}

type slot[K comparable, V any] struct {
	key   K
	val   V
	live  bool // holds the entry of key
	ref   bool // referenced since the hand last passed
	dirty bool // never evicted
}

// New returns an empty cache of at most limit entries (at least 1). Before
// creating each slot after the first, it calls grow, if not nil; once grow
// returns false, the cache keeps the slots it has.
func New[K comparable, V any](limit int, grow func() bool) *Cache[K, V] {
	return &Cache[K, V]{limit: max(limit, 1), grow: grow}
}

// Get returns the value cached under k and marks it referenced; nil, false
// if k is not cached.
func (c *Cache[K, V]) Get(k K) (*V, bool) {
	i, ok := c.index[k]
	if !ok {
		return nil, false
	}
	s := &c.slots[i]
	s.ref = true
	return &s.val, true
}

// Peek is Get without marking the entry referenced.
func (c *Cache[K, V]) Peek(k K) (*V, bool) {
	i, ok := c.index[k]
	if !ok {
		return nil, false
	}
	return &c.slots[i].val, true
}

// Insert caches k, referenced and clean, and returns its value for the
// caller to fill: k's own value if k is cached already; else the value left
// in the slot it claims (an evicted or removed entry's), or the zero value
// in a new slot. To make room it evicts the least recently referenced clean
// entry; if every entry is dirty, it adds a slot past the limit.
func (c *Cache[K, V]) Insert(k K) *V {
	if i, ok := c.index[k]; ok {
		s := &c.slots[i]
		c.clean(s)
		s.ref = true
		return &s.val
	}
	i := c.claim()
	s := &c.slots[i]
	s.key, s.live, s.ref, s.dirty = k, true, true, false
	if c.index == nil {
		c.index = make(map[K]int32)
	}
	c.index[k] = int32(i)
	c.live++
	return &s.val
}

// Remove drops the entry of k, if any, dirty or not. Its value stays in the
// slot for a later Insert to reuse; clear it first to let it be collected.
func (c *Cache[K, V]) Remove(k K) {
	i, ok := c.index[k]
	if !ok {
		return
	}
	c.drop(int(i))
	c.free = append(c.free, i)
}

// SetDirty marks the entry of k dirty (never evicted) or clean again after
// its value was written back; false if k is not cached.
func (c *Cache[K, V]) SetDirty(k K, dirty bool) bool {
	i, ok := c.index[k]
	if !ok {
		return false
	}
	s := &c.slots[i]
	if dirty && !s.dirty {
		s.dirty = true
		c.dirty++
	} else if !dirty {
		c.clean(s)
	}
	return true
}

// Dirty returns the number of dirty entries.
func (c *Cache[K, V]) Dirty() int { return c.dirty }

// Len returns the number of entries.
func (c *Cache[K, V]) Len() int { return c.live }

// AppendDirty appends the values of the dirty entries to dst, in slot
// order, and returns the extended slice. They stay dirty.
func (c *Cache[K, V]) AppendDirty(dst []V) []V {
	if c.dirty == 0 {
		return dst
	}
	for i := range c.slots {
		if s := &c.slots[i]; s.live && s.dirty {
			dst = append(dst, s.val)
		}
	}
	return dst
}

// claim returns a slot without an entry, taking it from the free slots,
// creating it, or evicting its entry, in that order of preference.
func (c *Cache[K, V]) claim() int {
	// Back from past the limit (every entry was dirty): evict the surplus
	// and let its values go.
	for c.live > c.limit {
		i := c.evict()
		if i < 0 {
			break
		}
		var zero V
		c.slots[i].val = zero
		c.free = append(c.free, int32(i))
	}
	if c.live < c.limit {
		if i, ok := c.popFree(); ok {
			return i
		}
		// No free slot: len(c.slots) == c.live < c.limit.
		if len(c.slots) == 0 || c.grow == nil || c.grow() {
			return c.add()
		}
		c.limit = len(c.slots)
	}
	if i := c.evict(); i >= 0 {
		return i
	}
	if i, ok := c.popFree(); ok {
		return i
	}
	return c.add()
}

// evict turns the clock hand until it finds a clean entry whose reference
// bit is clear, clearing the bits it passes, and drops that entry; -1 if
// every entry is dirty.
func (c *Cache[K, V]) evict() int {
	n := len(c.slots)
	for range 2 * n {
		i := c.hand
		if c.hand++; c.hand == n {
			c.hand = 0
		}
		s := &c.slots[i]
		switch {
		case !s.live || s.dirty:
		case s.ref:
			s.ref = false
		default:
			c.drop(i)
			return i
		}
	}
	return -1
}

// drop removes the entry in slot i from the index, keeping its value.
func (c *Cache[K, V]) drop(i int) {
	s := &c.slots[i]
	delete(c.index, s.key)
	c.clean(s)
	var zero K
	s.key, s.live, s.ref = zero, false, false
	c.live--
}

func (c *Cache[K, V]) clean(s *slot[K, V]) {
	if s.dirty {
		s.dirty = false
		c.dirty--
	}
}

func (c *Cache[K, V]) popFree() (int, bool) {
	n := len(c.free)
	if n == 0 {
		return 0, false
	}
	i := c.free[n-1]
	c.free = c.free[:n-1]
	return int(i), true
}

func (c *Cache[K, V]) add() int {
	c.slots = append(c.slots, slot[K, V]{})
	return len(c.slots) - 1
}
