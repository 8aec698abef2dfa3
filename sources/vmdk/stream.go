package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nbdloop/nbdloop/sources/internal/clockcache"
)

// streamCache keeps recently inflated grains of a compressed
// (streamOptimized) extent: sequential reads of a grain in pieces inflate it
// once. Slots are allocated on first use and then reused (clock eviction,
// their buffers too); the inflater and the buffer of compressed bytes are
// reused as well, so a hit allocates nothing and a miss little. The first
// slot, the buffer and the inflater are paid for at open; each further slot,
// up to limit, only if grow says the memory budget allows it. mu serializes
// the inflating and guards the cache.
type streamCache struct {
	mu     sync.Mutex
	grains *clockcache.Cache[uint64, inflatedGrain] // by the grain's file sector
	comp   []byte                                   // compressed bytes of the grain being inflated
	zr     io.ReadCloser
	br     bytes.Reader
}

// inflatedGrain is a grain as inflated: n bytes of data.
type inflatedGrain struct {
	n    int
	data []byte
}

func newStreamCache(grainBytes, budget int64, grow func(n int64) bool) *streamCache {
	limit := int(max(1, min(budget/grainBytes, 1<<20)))
	return &streamCache{grains: clockcache.New[uint64, inflatedGrain](limit, func() bool { return grow(grainBytes + slotOverhead) })}
}

// maxCompressed bounds a compressed grain: DEFLATE never grows data by more
// than a few bytes per 16 KiB block, so twice the grain (as qemu reads) is
// plenty.
func (e *sparse) maxCompressed() int64 { return 2 * e.grainBytes }

// readCompressed fills p from the compressed grain whose marker (or data,
// without markers) is at sector, starting within bytes into the inflated
// grain. grain is the grain number in the extent, to know how long a last
// grain cut short by the capacity may be.
func (e *sparse) readCompressed(p []byte, sector uint64, grain, within int64) error {
	c := e.stream
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := e.inflated(sector)
	if err != nil {
		return err
	}
	need := min(e.grainBytes, e.size-grain*e.grainBytes)
	if int64(s.n) < need {
		return e.corrupt(fmt.Sprintf("the compressed grain at sector %d inflates to %d bytes, want %d", sector, s.n, need))
	}
	copy(p, s.data[within:])
	return nil
}

// inflated returns the inflated grain at sector, inflating it on a miss.
// The caller holds c.mu.
func (e *sparse) inflated(sector uint64) (*inflatedGrain, error) {
	c := e.stream
	if g, ok := c.grains.Get(sector); ok {
		return g, nil
	}
	pos := int64(sector) * sectorSize
	if sector == 0 || sector >= uint64(e.fileSize)/sectorSize+1 || pos >= e.fileSize {
		return nil, e.corrupt(fmt.Sprintf("a compressed grain at sector %d lies outside the file", sector))
	}
	var size int64
	if e.markers {
		var m [12]byte
		if _, err := e.f.ReadAt(m[:], pos); err != nil {
			return nil, fmt.Errorf("%s: reading a grain marker: %w", e.name, noEOF(err))
		}
		size = int64(binary.LittleEndian.Uint32(m[8:]))
		pos += 12
		if size == 0 || size > e.maxCompressed() || size > e.fileSize-pos {
			return nil, e.corrupt(fmt.Sprintf("the grain marker at sector %d gives a compressed size of %d bytes", sector, size))
		}
	} else {
		size = min(e.maxCompressed(), e.fileSize-pos)
	}
	if int64(cap(c.comp)) < size {
		c.comp = make([]byte, e.maxCompressed())
	}
	comp := c.comp[:size]
	if _, err := e.f.ReadAt(comp, pos); err != nil {
		return nil, fmt.Errorf("%s: reading a compressed grain: %w", e.name, noEOF(err))
	}
	g := c.grains.Insert(sector)
	if g.data == nil {
		g.data = make([]byte, e.grainBytes)
	}
	g.n = 0
	if err := c.inflate(g, comp); err != nil {
		c.grains.Remove(sector)
		return nil, e.corrupt(fmt.Sprintf("the compressed grain at sector %d: %v", sector, err))
	}
	return g, nil
}

// inflate inflates comp into g with the reused zlib reader. The caller
// holds c.mu.
func (c *streamCache) inflate(g *inflatedGrain, comp []byte) error {
	c.br.Reset(comp)
	var err error
	if c.zr == nil {
		c.zr, err = zlib.NewReader(&c.br)
	} else {
		err = c.zr.(zlib.Resetter).Reset(&c.br, nil)
	}
	if err != nil {
		return err
	}
	n, err := io.ReadFull(c.zr, g.data)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return err
	}
	g.n = n
	return nil
}
