package vmdk

import (
	"fmt"
	"syscall"

	"github.com/nbdloop/nbdloop/sources/internal/clockcache"
)

// gtCache keeps recently used grain tables of one sparse extent in memory,
// as the little-endian bytes of the file, keyed by grain directory index.
// Slots are allocated on first use and then reused (clock eviction, their
// buffers too), so that a lookup that hits allocates nothing. The first slot
// is paid for at open; each further one, up to the limit, only if the
// memory budget allows it (sparse.chargeSlot). It is used with the owner
// holding sparse.cmu.
type gtCache = clockcache.Cache[uint32, []byte]

// slotOverhead is charged for a cache slot besides its data.
const slotOverhead = 64

// newGTCache returns a cache of at most limit tables of size bytes, which
// asks grow for the memory of each slot after the first.
func newGTCache(limit, size int, grow func(n int64) bool) *gtCache {
	return clockcache.New[uint32, []byte](limit, func() bool { return grow(int64(size) + slotOverhead) })
}

// table returns grain table gdIdx as the file holds it (4 bytes per GTE,
// little-endian), loading it on a miss. The slice is valid until the next
// call; the caller holds sparse.cmu.
func (e *sparse) table(gdIdx uint32) ([]byte, error) {
	if raw, ok := e.cache.Get(gdIdx); ok {
		return *raw, nil
	}
	size := e.perGT * 4
	sector := uint64(e.gd[gdIdx])
	off := int64(sector) * sectorSize
	if sector == 0 || off > e.fileSize-size {
		return nil, e.corrupt(fmt.Sprintf("grain table %d at sector %d lies outside the %d-byte file", gdIdx, sector, e.fileSize))
	}
	raw := e.cache.Insert(gdIdx)
	if *raw == nil {
		*raw = make([]byte, size)
	}
	if _, err := e.f.ReadAt(*raw, off); err != nil {
		e.cache.Remove(gdIdx)
		return nil, fmt.Errorf("reading grain table %d: %w", gdIdx, noEOF(err))
	}
	return *raw, nil
}

// storeTable replaces the cached copy of table gdIdx, if any, with raw (the
// table's bytes) after the table was written. The caller holds sparse.cmu.
func (e *sparse) storeTable(gdIdx uint32, raw []byte) {
	if t, ok := e.cache.Peek(gdIdx); ok {
		copy(*t, raw)
	}
}

// corrupt wraps a description of damaged metadata with EIO and the extent's
// file name.
func (e *sparse) corrupt(what string) error {
	return fmt.Errorf("%s: corrupt sparse extent: %s: %w", e.name, what, syscall.EIO)
}
