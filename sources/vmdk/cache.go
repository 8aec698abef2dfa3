package vmdk

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// gtCache keeps recently used grain tables of one sparse extent in memory,
// within a fixed number of slots allocated on first use and then reused
// (clock eviction), so that a lookup that hits allocates nothing. Its
// methods are called with the cache's owner holding sparse.mu (read or
// write) and take cache.mu themselves.
type gtCache struct {
	slots []gtSlot
	limit int              // most slots
	index map[uint32]int32 // grain directory index -> slot
	hand  int              // clock hand
	raw   []byte           // read buffer for one table
}

type gtSlot struct {
	gd  uint32
	ref bool
	gte []uint32
}

func newGTCache(limit, entries int) *gtCache {
	return &gtCache{limit: max(limit, 2), index: make(map[uint32]int32), raw: make([]byte, entries*4)}
}

// table returns the entries of grain table gdIdx, loading it from the
// file on a miss. The slice is valid until the next call; the caller holds
// sparse.cmu.
func (e *sparse) table(gdIdx uint32) ([]uint32, error) {
	c := e.cache
	if i, ok := c.index[gdIdx]; ok {
		s := &c.slots[i]
		s.ref = true
		return s.gte, nil
	}
	sector := uint64(e.gd[gdIdx])
	off := int64(sector) * sectorSize
	n := int64(len(c.raw))
	if sector == 0 || off+n > e.fileSize {
		return nil, e.corrupt(fmt.Sprintf("grain table %d at sector %d lies outside the %d-byte file", gdIdx, sector, e.fileSize))
	}
	if _, err := e.f.ReadAt(c.raw, off); err != nil {
		return nil, fmt.Errorf("reading grain table %d: %w", gdIdx, err)
	}
	i := c.slot()
	s := &c.slots[i]
	if s.gte == nil {
		s.gte = make([]uint32, len(c.raw)/4)
	}
	for i := range s.gte {
		s.gte[i] = binary.LittleEndian.Uint32(c.raw[i*4:])
	}
	s.gd, s.ref = gdIdx, true
	c.index[gdIdx] = int32(i)
	return s.gte, nil
}

// slot returns a free slot, evicting the least recently referenced one
// when every slot is taken.
func (c *gtCache) slot() int {
	if len(c.slots) < c.limit {
		c.slots = append(c.slots, gtSlot{})
		return len(c.slots) - 1
	}
	for {
		i := c.hand
		s := &c.slots[i]
		c.hand = (c.hand + 1) % len(c.slots)
		if s.ref {
			s.ref = false
			continue
		}
		delete(c.index, s.gd)
		return i
	}
}

// store replaces the cached copy of table gdIdx, if any, after the table
// was written.
func (c *gtCache) store(gdIdx uint32, gte []uint32) {
	if i, ok := c.index[gdIdx]; ok {
		copy(c.slots[i].gte, gte)
	}
}

// corrupt wraps a description of damaged metadata with EIO and the extent's
// file name.
func (e *sparse) corrupt(what string) error {
	return fmt.Errorf("%s: corrupt sparse extent: %s: %w", e.name, what, syscall.EIO)
}
