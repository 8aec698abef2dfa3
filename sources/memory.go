package sources

import (
	"bytes"
	"fmt"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
)

// Memory is a sparse RAM disk: a Source whose bytes live in the server's
// memory and vanish when it exits. Use it for scratch devices, tests and
// benchmarks of the layers above a Source.
//
// The only option is the size, from 1 byte to 2^63-1 bytes (the largest
// int64); it is used as given, so the caller rounds it to the device's block
// size. Memory is allocated in 64 KiB pages, only when non-zero data is first
// written to a page: holes read as zeros, writing zeros to a hole allocates
// nothing, a write that turns a whole page to zeros frees it, and Trim and
// Zero free the whole pages they cover and clear the partial ones. Resident
// memory therefore follows the data written, not the size; an exabyte disk
// costs a few kilobytes until it is written to.
//
// Limits: nothing bounds the memory used but the size, so writing a large
// disk full can exhaust the machine's memory, and then the Go runtime aborts
// the server. Zero frees pages even without mayTrim: a RAM disk has no
// allocation to keep.
//
// Caps: Parallel, Trim and Zero; no Flush (there is nothing to make durable).
//
// Example, the largest disk there can be (8 EiB), costing memory only for
// what is written to it:
//
//	m, err := sources.NewMemory(1<<63 - 1)
type Memory struct {
	size   int64
	shift  uint // index shift of the root's children, in pages
	root   memNode
	closed atomic.Bool
	// resident counts the bytes of allocated pages.
	resident atomic.Int64
}

const (
	// A page of 64 KiB keeps the radix tree shallow and its overhead small
	// (one 8 KiB bottom node per 32 MiB of pages, 0.025%), and serves a
	// typical 128 KiB NBD request from two or three pages, each taken with
	// one lock. Smaller pages would waste less memory on scattered 4 KiB
	// writes but cost more locks, lookups and table memory per byte; larger
	// ones would make Trim coarser (only whole pages are freed).
	memPageShift = 16
	memPageSize  = 1 << memPageShift

	// Nodes of 512 slots keep each level's array near a hardware page; a
	// 2^63-1 byte disk (2^47 pages) needs 6 levels.
	memFanShift = 9
	memFanout   = 1 << memFanShift
)

// memNode is one level of the radix tree that maps page numbers to pages.
// Interior levels use kids and the bottom level uses pages; having both in
// one type avoids unsafe pointer casts, at the cost of 4 KiB of unused slots
// per node. Slots are installed with compare-and-swap, so lookups take no
// lock, and nodes are allocated on the first write below them, so the tree's
// size follows the data, not the disk's size.
type memNode struct {
	kids  [memFanout]atomic.Pointer[memNode]
	pages [memFanout]atomic.Pointer[memPage]
}

// memPage holds one page of data. Its lock makes concurrent overlapping
// requests race only in the NBD sense (either data may win), never in the Go
// memory model's.
type memPage struct {
	mu   sync.RWMutex
	data [memPageSize]byte
}

// zeros is read-only: it is a source of zero bytes for comparisons and for
// writing zeros, and is never written to.
var zeros [1 << 20]byte

var errMemoryClosed = fmt.Errorf("sources: memory source: %w", os.ErrClosed)

// NewMemory returns an empty (all zeros) RAM disk of size bytes, which must
// be positive.
func NewMemory(size int64) (*Memory, error) {
	if size <= 0 {
		return nil, fmt.Errorf("sources: memory source of %d bytes: %w", size, ErrEmpty)
	}
	lastPage := uint64(size-1) >> memPageShift
	levels := (bits.Len64(lastPage) + memFanShift - 1) / memFanShift
	if levels < 1 {
		levels = 1
	}
	return &Memory{size: size, shift: uint(levels-1) * memFanShift}, nil
}

// Size returns the size given to NewMemory.
func (m *Memory) Size() int64 { return m.size }

// Caps reports Parallel, Trim and Zero.
func (m *Memory) Caps() Caps { return Caps{Parallel: true, Trim: true, Zero: true, InMemory: true} }

// Resident returns the bytes held in allocated pages: a multiple of the page
// size, growing with non-zero data written and shrinking with Trim and Zero.
// It does not count the radix tree's nodes.
func (m *Memory) Resident() int64 { return m.resident.Load() }

// bottom returns the bottom-level node for page pn, creating the missing
// nodes on the way when create is set, or nil when they are missing and
// create is not set.
func (m *Memory) bottom(pn int64, create bool) *memNode {
	n := &m.root
	for shift := m.shift; shift > 0; shift -= memFanShift {
		slot := &n.kids[(pn>>shift)&(memFanout-1)]
		next := slot.Load()
		if next == nil {
			if !create {
				return nil
			}
			next = new(memNode)
			if !slot.CompareAndSwap(nil, next) {
				next = slot.Load()
			}
		}
		n = next
	}
	return n
}

// page returns page pn, or nil for a hole.
func (m *Memory) page(pn int64) *memPage {
	n := m.bottom(pn, false)
	if n == nil {
		return nil
	}
	return n.pages[pn&(memFanout-1)].Load()
}

// ReadAt copies the bytes at off into p; holes read as zeros.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		pn := off >> memPageShift
		po := int(off & (memPageSize - 1))
		chunk := p[done:min(len(p), done+memPageSize-po)]
		if pg := m.page(pn); pg != nil {
			pg.mu.RLock()
			copy(chunk, pg.data[po:])
			pg.mu.RUnlock()
		} else {
			clear(chunk)
		}
		done += len(chunk)
		off += int64(len(chunk))
	}
	return done, nil
}

// WriteAt copies p to the bytes at off, allocating pages for non-zero data.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		pn := off >> memPageShift
		po := int(off & (memPageSize - 1))
		chunk := p[done:min(len(p), done+memPageSize-po)]
		done += len(chunk)
		off += int64(len(chunk))

		var slot *atomic.Pointer[memPage]
		var pg *memPage
		if n := m.bottom(pn, false); n != nil {
			slot = &n.pages[pn&(memFanout-1)]
			pg = slot.Load()
		}
		if pg == nil && isZero(chunk) {
			continue // a hole already reads as these zeros
		}
		if pg != nil && len(chunk) == memPageSize && isZero(chunk) {
			// The whole page becomes zeros (mkfs and dd do this a lot):
			// free it instead of storing them.
			if slot.CompareAndSwap(pg, nil) {
				m.resident.Add(-memPageSize)
			}
			continue
		}
		if pg == nil {
			slot = &m.bottom(pn, true).pages[pn&(memFanout-1)]
			pg = m.install(slot)
		}
		pg.mu.Lock()
		copy(pg.data[po:], chunk)
		pg.mu.Unlock()
	}
	return done, nil
}

// install returns the page in slot, allocating it if the slot is empty.
func (m *Memory) install(slot *atomic.Pointer[memPage]) *memPage {
	if pg := slot.Load(); pg != nil {
		return pg
	}
	pg := new(memPage)
	if slot.CompareAndSwap(nil, pg) {
		m.resident.Add(memPageSize)
		return pg
	}
	// Another writer installed the page first; use theirs so that both
	// writes land in the same page.
	return slot.Load()
}

// Flush does nothing: memory has no volatile cache to write back.
func (m *Memory) Flush() error {
	if m.closed.Load() {
		return errMemoryClosed
	}
	return nil
}

// Trim frees the pages the range covers completely and zeros the rest of it.
func (m *Memory) Trim(off, length int64) error {
	return m.Zero(off, length, true)
}

// Zero makes the range read as zeros, freeing the pages it covers
// completely whether or not mayTrim is set: a RAM disk has no allocation to
// preserve.
func (m *Memory) Zero(off, length int64, mayTrim bool) error {
	if err := m.check(off, length); err != nil {
		return err
	}
	end := off + length
	if po := off & (memPageSize - 1); po != 0 || length < memPageSize {
		n := min(length, memPageSize-po)
		m.clearPartial(off, n)
		off += n
	}
	// off is now page-aligned, or equal to end.
	if tail := end & (memPageSize - 1); tail != 0 && off < end {
		m.clearPartial(end-tail, tail)
		end -= tail
	}
	if off < end {
		m.free(&m.root, m.shift, off>>memPageShift, (end>>memPageShift)-1)
	}
	return nil
}

// clearPartial zeros [off, off+n), which lies inside one page.
func (m *Memory) clearPartial(off, n int64) {
	pg := m.page(off >> memPageShift)
	if pg == nil {
		return
	}
	po := off & (memPageSize - 1)
	pg.mu.Lock()
	clear(pg.data[po : po+n])
	pg.mu.Unlock()
}

// free drops pages lo..hi (inclusive) below node n, whose children are
// indexed by page number >> shift. It visits only the nodes that exist, so
// trimming an exabyte costs what is allocated, not what is covered.
func (m *Memory) free(n *memNode, shift uint, lo, hi int64) {
	if shift == 0 {
		for pn := lo; pn <= hi; pn++ {
			if n.pages[pn&(memFanout-1)].Swap(nil) != nil {
				m.resident.Add(-memPageSize)
			}
		}
		return
	}
	span := int64(1) << shift // pages below each child
	for first := lo; first <= hi; {
		last := min(hi, first|(span-1))
		if kid := n.kids[(first>>shift)&(memFanout-1)].Load(); kid != nil {
			m.free(kid, shift-memFanShift, first, last)
		}
		first = last + 1
	}
}

// Close frees every page. Calls after Close fail; a second Close returns
// nil.
func (m *Memory) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	m.free(&m.root, m.shift, 0, (m.size-1)>>memPageShift)
	return nil
}

func (m *Memory) check(off, length int64) error {
	if m.closed.Load() {
		return errMemoryClosed
	}
	return CheckRange(off, length, m.size)
}

// isZero reports whether p holds only zero bytes, comparing with the shared
// zero buffer so that the runtime's vectorized memequal does the work.
func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// Extents reports the pages that hold data as data and the others as
// holes.
func (m *Memory) Extents(off, length int64, fn func(Extent) bool) error {
	if err := m.check(off, length); err != nil {
		return err
	}
	end := off + length
	for off < end {
		kind := m.pageKind(off >> memPageShift)
		next := min(end, (off>>memPageShift+1)<<memPageShift)
		for next < end && m.pageKind(next>>memPageShift) == kind {
			next = min(end, next+memPageSize)
		}
		if !fn(Extent{Off: off, Length: next - off, Kind: kind}) {
			return nil
		}
		off = next
	}
	return nil
}

func (m *Memory) pageKind(pn int64) ExtentKind {
	if m.page(pn) == nil {
		return ExtentHole
	}
	return ExtentData
}
