package qcow2

import (
	"sync"

	"github.com/nbdloop/nbdloop/sources/internal/clockcache"
)

// table is one cached metadata cluster: an L2 table or a refcount block.
// Its bytes are those on disk (big-endian entries), decoded on access, so a
// cache hit costs a map lookup and nothing is allocated.
//
// data is only modified while the image's metadata lock is held for
// writing; readers holding it for reading may use data without further
// locking.
type table struct {
	off  int64
	data []byte
}

// tableCache keeps up to max tables of one kind, by file offset, evicting
// clean ones in CLOCK order. Dirty tables (modified in memory, not yet
// written) stay until written (the image flushes its metadata when too many
// are dirty, see Image.maybeFlushMeta). Its memory is charged at open, for
// max tables. mu makes it safe for the readers that fill it concurrently.
type tableCache struct {
	mu  sync.Mutex
	c   *clockcache.Cache[int64, *table]
	max int
}

func newTableCache(max int) *tableCache {
	return &tableCache{c: clockcache.New[int64, *table](max, nil), max: max}
}

// get returns the cached table at off, or nil.
func (c *tableCache) get(off int64) *table {
	var t *table
	c.mu.Lock()
	if p, ok := c.c.Get(off); ok {
		t = *p
	}
	c.mu.Unlock()
	return t
}

// put inserts t, dirty or clean, unless a table at t.off is cached already,
// which it then returns instead (two readers loaded the same table at once).
func (c *tableCache) put(t *table, dirty bool) *table {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.c.Get(t.off); ok {
		return *old
	}
	*c.c.Insert(t.off) = t
	if dirty {
		c.c.SetDirty(t.off, true)
	}
	return t
}

// markDirty records that t was modified in memory. If t was evicted
// meanwhile (or replaced by a fresh copy read from disk), it goes back in,
// replacing the copy: t has the newer bytes.
func (c *tableCache) markDirty(t *table) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.c.Peek(t.off); !ok || *cur != t {
		*c.c.Insert(t.off) = t
	}
	c.c.SetDirty(t.off, true)
}

// dirtyTables returns the dirty tables (without clearing them).
func (c *tableCache) dirtyTables() []*table {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.AppendDirty(nil)
}

// clean marks t written.
func (c *tableCache) clean(t *table) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.c.Peek(t.off); ok && *cur == t {
		c.c.SetDirty(t.off, false)
	}
}

func (c *tableCache) dirtyCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.Dirty()
}
