package vmdk

import (
	"fmt"
	"syscall"
)

// gtCache keeps recently used grain tables of one sparse extent in memory,
// as the little-endian bytes of the file, within slots allocated on first
// use and then reused (clock eviction), so that a lookup that hits
// allocates nothing. The first slot is paid for at open; each further one,
// up to limit, only if grow says the memory budget allows it. Its methods
// are called with the owner holding sparse.cmu.
type gtCache struct {
	slots []gtSlot
	limit int              // most slots
	size  int              // bytes of a table
	index map[uint32]int32 // grain directory index -> slot
	hand  int              // clock hand
	grow  func(n int64) bool
}

type gtSlot struct {
	gd  uint32
	ref bool
	raw []byte
}

// slotOverhead is charged for a cache slot besides its data.
const slotOverhead = 64

func newGTCache(limit, size int, grow func(n int64) bool) *gtCache {
	return &gtCache{limit: max(limit, 1), size: size, grow: grow}
}

// table returns grain table gdIdx as the file holds it (4 bytes per GTE,
// little-endian), loading it on a miss. The slice is valid until the next
// call; the caller holds sparse.cmu.
func (e *sparse) table(gdIdx uint32) ([]byte, error) {
	c := e.cache
	if i, ok := c.index[gdIdx]; ok {
		s := &c.slots[i]
		s.ref = true
		return s.raw, nil
	}
	sector := uint64(e.gd[gdIdx])
	off := int64(sector) * sectorSize
	if sector == 0 || off > e.fileSize-int64(c.size) {
		return nil, e.corrupt(fmt.Sprintf("grain table %d at sector %d lies outside the %d-byte file", gdIdx, sector, e.fileSize))
	}
	i := c.slot()
	s := &c.slots[i]
	if s.raw == nil {
		s.raw = make([]byte, c.size)
	}
	if _, err := e.f.ReadAt(s.raw, off); err != nil {
		return nil, fmt.Errorf("reading grain table %d: %w", gdIdx, noEOF(err))
	}
	s.gd, s.ref = gdIdx, true
	if c.index == nil {
		c.index = make(map[uint32]int32)
	}
	c.index[gdIdx] = int32(i)
	return s.raw, nil
}

// slot returns a slot that no table is indexed in, growing the cache when
// it may, else evicting the least recently referenced table.
func (c *gtCache) slot() int {
	if len(c.slots) < c.limit {
		if len(c.slots) == 0 || c.grow(int64(c.size)+slotOverhead) {
			c.slots = append(c.slots, gtSlot{})
			return len(c.slots) - 1
		}
		c.limit = len(c.slots)
	}
	for {
		i := c.hand
		s := &c.slots[i]
		c.hand = (c.hand + 1) % len(c.slots)
		if s.ref {
			s.ref = false
			continue
		}
		if j, ok := c.index[s.gd]; ok && int(j) == i {
			delete(c.index, s.gd)
		}
		return i
	}
}

// store replaces the cached copy of table gdIdx, if any, with raw (the
// table's bytes) after the table was written.
func (c *gtCache) store(gdIdx uint32, raw []byte) {
	if i, ok := c.index[gdIdx]; ok {
		copy(c.slots[i].raw, raw)
	}
}

// corrupt wraps a description of damaged metadata with EIO and the extent's
// file name.
func (e *sparse) corrupt(what string) error {
	return fmt.Errorf("%s: corrupt sparse extent: %s: %w", e.name, what, syscall.EIO)
}
