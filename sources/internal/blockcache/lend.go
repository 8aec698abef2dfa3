package blockcache

import (
	"fmt"

	"syscall"
)

// loan is the chunks one Lend pinned and the slices of them it handed out.
type loan struct {
	c    *Cache
	ents []*entry
	bufs [][]byte
	done func() // l.release, made once so that handing it out allocates nothing
}

// Lend returns the n bytes at off as slices of the cache's own chunks, in
// order, instead of copying them out as ReadAt does: for a reply written
// straight from the cache (writev). The chunks are pinned until release is
// called, once: until then they are neither evicted nor reused, and they
// stay charged to the budget even if the cache drops them meanwhile. The
// caller must not modify the slices, nor use them after release. The
// range must lie within the image and hold no Spill segment; reads fail
// as in ReadAt. Once warm, Lend allocates nothing.
func (c *Cache) Lend(off, n int64) (bufs [][]byte, release func(), err error) {
	return c.lend(off, n, true)
}

// LendAlone is Lend without starting any readahead: for a reader that
// fetches what comes after its reads its own way.
func (c *Cache) LendAlone(off, n int64) (bufs [][]byte, release func(), err error) {
	return c.lend(off, n, false)
}

func (c *Cache) lend(off, n int64, ahead bool) (bufs [][]byte, release func(), err error) {
	if off < 0 || n <= 0 || off > c.size || n > c.size-off {
		return nil, nil, fmt.Errorf("blockcache: lending %d bytes at %d of %d: %w", n, off, c.size, syscall.EINVAL)
	}
	l := c.loans.Get()
	if l == nil {
		l = &loan{c: c}
		l.done = l.release
	}
	for end := off + n; off < end; {
		i := c.find(off)
		s := c.segs.Segment(i)
		if s.Spill {
			l.release()
			return nil, nil, fmt.Errorf("blockcache: bytes at %d are spilled, not cached: %w", off, syscall.EINVAL)
		}
		rel := off - s.Off
		idx := rel / c.chunk
		lo := rel - idx*c.chunk
		k := min(end-off, c.chunkLen(i, idx)-lo)
		e, err := c.get(i, idx, ahead)
		if err != nil {
			l.release()
			return nil, nil, err
		}
		l.ents = append(l.ents, e)
		if e.data == nil {
			l.bufs = append(l.bufs, c.zeroChunk()[:k])
		} else {
			l.bufs = append(l.bufs, e.data[lo:lo+k])
		}
		off += k
	}
	return l.bufs, l.done, nil
}

// zeroChunk returns a chunk of zeros that nothing writes.
func (c *Cache) zeroChunk() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.zeros == nil {
		c.zeros = make([]byte, c.chunk)
	}
	return c.zeros
}

// release unpins l's chunks and keeps l for the next Lend.
func (l *loan) release() {
	c := l.c
	c.mu.Lock()
	for i, e := range l.ents {
		c.unpinLocked(e)
		l.ents[i] = nil
	}
	c.mu.Unlock()
	clear(l.bufs)
	l.ents, l.bufs = l.ents[:0], l.bufs[:0]
	c.loans.Put(l)
}
