package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// streamCache keeps recently inflated grains of a compressed
// (streamOptimized) extent: sequential reads of a grain in pieces inflate it
// once. Slots are allocated on first use and then reused (clock eviction);
// the inflater and the buffer of compressed bytes are reused too, so a hit
// allocates nothing and a miss little. The first slot, the buffer and the
// inflater are paid for at open; each further slot, up to limit, only if
// grow says the memory budget allows it. mu serializes the inflating.
type streamCache struct {
	mu    sync.Mutex
	slots []streamSlot
	limit int
	size  int64 // bytes of a slot: a grain
	grow  func(n int64) bool
	index map[uint64]int // grain's file sector -> slot
	hand  int
	comp  []byte // compressed bytes of the grain being inflated
	zr    io.ReadCloser
	br    bytes.Reader
}

type streamSlot struct {
	sector uint64
	ref    bool
	n      int // inflated bytes in data
	data   []byte
}

func newStreamCache(grainBytes, budget int64, grow func(n int64) bool) *streamCache {
	return &streamCache{limit: int(max(1, min(budget/grainBytes, 1<<20))), size: grainBytes, grow: grow, index: make(map[uint64]int)}
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

// inflated returns the slot holding the inflated grain at sector, inflating
// it on a miss. The caller holds c.mu.
func (e *sparse) inflated(sector uint64) (*streamSlot, error) {
	c := e.stream
	if i, ok := c.index[sector]; ok {
		c.slots[i].ref = true
		return &c.slots[i], nil
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
	i := c.slot()
	s := &c.slots[i]
	if s.data == nil {
		s.data = make([]byte, e.grainBytes)
	}
	c.br.Reset(comp)
	var err error
	if c.zr == nil {
		c.zr, err = zlib.NewReader(&c.br)
	} else {
		err = c.zr.(zlib.Resetter).Reset(&c.br, nil)
	}
	if err != nil {
		return nil, e.corrupt(fmt.Sprintf("the compressed grain at sector %d: %v", sector, err))
	}
	n, err := io.ReadFull(c.zr, s.data)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, e.corrupt(fmt.Sprintf("the compressed grain at sector %d: %v", sector, err))
	}
	s.sector, s.n, s.ref = sector, n, true
	c.index[sector] = i
	return s, nil
}

func (c *streamCache) slot() int {
	if len(c.slots) < c.limit {
		if len(c.slots) == 0 || c.grow(c.size+slotOverhead) {
			c.slots = append(c.slots, streamSlot{})
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
		if j, ok := c.index[s.sector]; ok && j == i {
			delete(c.index, s.sector)
		}
		s.n = 0
		return i
	}
}
