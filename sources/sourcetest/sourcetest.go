// Package sourcetest checks that a sources.Source keeps the Source contract,
// in the spirit of testing/iotest and testing/fstest: every backend and
// filter calls Run (or RunSparse) from its own tests.
//
//	func TestMemoryConformance(t *testing.T) {
//		sourcetest.RunSparse(t, func(t *testing.T) sources.Source {
//			m, err := sources.NewMemory(1 << 20)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return m
//		}, 1<<20, sourcetest.Zeros{})
//	}
//
// The checks, one sub-test each: Size; Caps is stable; reads at random
// offsets and lengths (aligned or not) against the reference bytes; reads at
// the end boundary; errors, not panics, for reads and writes outside the
// source (overflowing offsets included); zero-length calls; parallel reads
// when Caps().Parallel; for writable sources, writes read back (at random
// unaligned ranges, and that the source does not keep p), concurrent writes,
// zeros and trims to adjacent disjoint ranges when Caps().Parallel, Zero
// reading back zeros, Trim reading back old bytes or zeros; for read-only
// sources, ErrReadOnly from every modifying call; Flush; a second Close that
// does not panic.
//
// Random choices come from a fixed seed per sub-test, so a failure repeats.
// With -short, fewer random requests are made.
package sourcetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// Run checks the sources returned by open, whose contents must be want.
//
// open is called once per sub-test with that sub-test's t and must return a
// new Source (or one reset to want: sub-tests write to it), failing t if it
// cannot. Run closes every Source it opens; open may register its own
// cleanups, such as removing files, with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) sources.Source, want []byte) {
	t.Helper()
	RunSparse(t, open, int64(len(want)), bytes.NewReader(want))
}

// RunSparse is Run for sources too large to hold a copy of: size is the
// expected Size and want reads the expected contents of [0, size), such as
// Zeros{} for a new Memory. want.ReadAt must fill p for every in-range
// request (returning io.EOF along with a full p at the end is accepted).
//
// RunSparse keeps what it writes in a sparse model, so it works for sizes up
// to 2^63-1; reads and writes touch at most a few MiB.
func RunSparse(t *testing.T, open func(t *testing.T) sources.Source, size int64, want io.ReaderAt) {
	t.Helper()
	if size <= 0 {
		t.Fatalf("sourcetest: size %d, want > 0", size)
	}
	c := &checker{open: open, size: size, ref: want}

	src := open(t)
	c.caps = src.Caps()
	if err := src.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}

	tests := []struct {
		name   string
		skip   string // why the sub-test does not apply, if it does not
		closes bool   // fn closes src itself
		fn     func(t *testing.T, src sources.Source)
	}{
		{name: "Size", fn: c.testSize},
		{name: "Caps", fn: c.testCaps},
		{name: "ReadRandom", fn: c.testReadRandom},
		{name: "ReadEnd", fn: c.testReadEnd},
		{name: "OutOfRange", fn: c.testOutOfRange},
		{name: "ZeroLength", fn: c.testZeroLength},
		{name: "ReadParallel", skip: c.ifNot(c.caps.Parallel, "Caps().Parallel is false"), fn: c.testReadParallel},
		{name: "ReadOnly", skip: c.ifNot(c.caps.ReadOnly, "the source is writable"), fn: c.testReadOnly},
		{name: "WriteRead", skip: c.ifNot(!c.caps.ReadOnly, "the source is read-only"), fn: c.testWriteRead},
		{name: "WriteParallel", skip: c.ifNot(!c.caps.ReadOnly && c.caps.Parallel, "the source is read-only or not parallel"), fn: c.testWriteParallel},
		{name: "Zero", skip: c.ifNot(!c.caps.ReadOnly, "the source is read-only"), fn: c.testZero},
		{name: "Trim", skip: c.ifNot(!c.caps.ReadOnly, "the source is read-only"), fn: c.testTrim},
		{name: "Flush", fn: c.testFlush},
		{name: "CloseTwice", closes: true, fn: c.testCloseTwice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skip != "" {
				t.Skip(tt.skip)
			}
			src := open(t)
			if !tt.closes {
				t.Cleanup(func() {
					if err := src.Close(); err != nil {
						t.Errorf("Close() = %v, want nil", err)
					}
				})
			}
			tt.fn(t, src)
		})
	}
}

// Zeros is an io.ReaderAt of endless zeros: the reference contents of a new
// sparse source, for RunSparse.
type Zeros struct{}

// ReadAt clears p.
func (Zeros) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

type checker struct {
	open func(t *testing.T) sources.Source
	size int64
	ref  io.ReaderAt
	caps sources.Caps
}

func (c *checker) ifNot(cond bool, why string) string {
	if cond {
		return ""
	}
	return why
}

func newRand(name string) *rand.Rand {
	var seed uint64
	for _, b := range []byte(name) {
		seed = seed*131 + uint64(b)
	}
	return rand.New(rand.NewPCG(seed, 0x6e62646c6f6f70))
}

// iters returns n, or a quarter of it with -short.
func iters(n int) int {
	if testing.Short() {
		return max(2, n/4)
	}
	return n
}

// maxIO bounds the length of one request, keeping the checks fast on
// sources of any size.
const maxIO = 1 << 20

// randLen returns a request length: mostly small and unaligned, sometimes
// sector or page multiples, sometimes large.
func (c *checker) randLen(r *rand.Rand) int {
	var n int
	switch r.IntN(6) {
	case 0:
		n = 1 + r.IntN(16)
	case 1:
		n = 1 + r.IntN(1000)
	case 2:
		n = 512 * (1 + r.IntN(16))
	case 3:
		n = 4096 * (1 + r.IntN(32))
	case 4:
		n = 1 + r.IntN(64<<10)
	default:
		n = 1 + r.IntN(maxIO)
	}
	return int(min(int64(n), c.size))
}

// randOff returns an offset at which n bytes fit: uniform, sector or page
// aligned, at the start, or at the end.
func (c *checker) randOff(r *rand.Rand, n int) int64 {
	last := c.size - int64(n)
	switch r.IntN(6) {
	case 0:
		return 0
	case 1:
		return last
	case 2:
		return r.Int64N(last+1) &^ 511
	case 3:
		return r.Int64N(last+1) &^ 4095
	default:
		return r.Int64N(last + 1)
	}
}

// fillRandom fills p with random bytes that are never zero, so that data
// is never mistaken for a hole or for zeroed bytes.
func fillRandom(r *rand.Rand, p []byte) {
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, r.Uint64()|0x0101010101010101)
		p = p[8:]
	}
	for i := range p {
		p[i] = byte(r.Uint32()) | 1
	}
}

// wholeLimit is the largest size for which Zero and Trim are checked on
// the whole source: the model costs about 1 KiB per 512 bytes modified.
const wholeLimit = 16 << 20

// guard is how many bytes past len(p) readAndCheck watches for writes.
const guard = 64

// read reads n bytes at off into a fresh buffer pre-filled with garbage
// (so that a source which leaves holes unfilled is caught) and followed by
// guard bytes that must stay untouched.
func read(t *testing.T, src sources.Source, off int64, n int) ([]byte, bool) {
	t.Helper()
	buf := bytes.Repeat([]byte{0xa5}, n+guard)
	p := buf[:n]
	got, err := src.ReadAt(p, off)
	if got != n || err != nil {
		t.Errorf("ReadAt(off=%d, len=%d) = %d, %v, want %d, nil", off, n, got, err, n)
		return nil, false
	}
	for i, b := range buf[n:] {
		if b != 0xa5 {
			t.Errorf("ReadAt(off=%d, len=%d) wrote past len(p): byte %d after it is %#x", off, n, i, b)
			return nil, false
		}
	}
	return p, true
}

// checkRead reads [off, off+n) and compares it with the model.
func (c *checker) checkRead(t *testing.T, src sources.Source, m *model, off int64, n int) bool {
	t.Helper()
	got, ok := read(t, src, off, n)
	if !ok {
		return false
	}
	return m.check(t, got, off)
}

func (c *checker) testSize(t *testing.T, src sources.Source) {
	if got := src.Size(); got != c.size {
		t.Errorf("Size() = %d, want %d", got, c.size)
	}
}

func (c *checker) testCaps(t *testing.T, src sources.Source) {
	for range 3 {
		if got := src.Caps(); got != c.caps {
			t.Fatalf("Caps() = %v, want %v (the value at the first open)", got, c.caps)
		}
	}
}

func (c *checker) testReadRandom(t *testing.T, src sources.Source) {
	r := newRand(t.Name())
	m := newModel(c.size, c.ref)
	if c.size <= 8<<20 {
		if !c.checkRead(t, src, m, 0, int(c.size)) {
			return
		}
	}
	for range iters(100) {
		n := c.randLen(r)
		if !c.checkRead(t, src, m, c.randOff(r, n), n) {
			return
		}
	}
}

func (c *checker) testReadEnd(t *testing.T, src sources.Source) {
	m := newModel(c.size, c.ref)
	for _, n := range []int64{1, 2, 511, 512, 513, 4096, 65536 + 3, 1 << 20} {
		n = min(n, c.size)
		c.checkRead(t, src, m, c.size-n, int(n))
	}
}

func (c *checker) testOutOfRange(t *testing.T, src sources.Source) {
	s := c.size
	tests := []struct {
		name     string
		off, len int64
	}{
		{name: "at end", off: s, len: 1},
		{name: "across end", off: s - 1, len: 2},
		{name: "far past end", off: s + 4096, len: 512},
		{name: "negative offset", off: -1, len: 1},
		{name: "max offset", off: math.MaxInt64, len: 1},
		{name: "overflowing end", off: s / 2, len: math.MaxInt64},
		{name: "min offset", off: math.MinInt64, len: 1},
	}
	m := newModel(c.size, c.ref)
	for _, tt := range tests {
		// A request that is too long for memory is tested on Trim and Zero
		// only.
		n := tt.len
		if n > 1<<20 {
			n = 0
		}
		if n > 0 {
			p := make([]byte, n)
			if got, err := noPanic(t, "ReadAt", func() (int, error) { return src.ReadAt(p, tt.off) }); err == nil || got >= len(p) {
				t.Errorf("%s: ReadAt(off=%d, len=%d) = %d, %v, want an error", tt.name, tt.off, n, got, err)
			}
			fillRandom(newRand(tt.name), p)
			if got, err := noPanic(t, "WriteAt", func() (int, error) { return src.WriteAt(p, tt.off) }); err == nil || got >= len(p) {
				t.Errorf("%s: WriteAt(off=%d, len=%d) = %d, %v, want an error", tt.name, tt.off, n, got, err)
			}
		}
		if _, err := noPanic(t, "Trim", func() (int, error) { return 0, src.Trim(tt.off, tt.len) }); err == nil {
			t.Errorf("%s: Trim(off=%d, len=%d) = nil, want an error", tt.name, tt.off, tt.len)
		}
		for _, mayTrim := range []bool{false, true} {
			if _, err := noPanic(t, "Zero", func() (int, error) { return 0, src.Zero(tt.off, tt.len, mayTrim) }); err == nil {
				t.Errorf("%s: Zero(off=%d, len=%d, mayTrim=%v) = nil, want an error", tt.name, tt.off, tt.len, mayTrim)
			}
		}
	}
	for _, l := range []int64{-1, math.MinInt64} {
		if _, err := noPanic(t, "Trim", func() (int, error) { return 0, src.Trim(0, l) }); err == nil {
			t.Errorf("Trim(off=0, len=%d) = nil, want an error", l)
		}
		if _, err := noPanic(t, "Zero", func() (int, error) { return 0, src.Zero(0, l, true) }); err == nil {
			t.Errorf("Zero(off=0, len=%d, mayTrim=true) = nil, want an error", l)
		}
	}
	// The bytes next to the end must not have been changed by the
	// failed requests that straddle it.
	c.checkRead(t, src, m, c.size-min(c.size, 4096), int(min(c.size, 4096)))
}

// noPanic calls fn and turns a panic into a test error.
func noPanic(t *testing.T, what string, fn func() (int, error)) (n int, err error) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Errorf("%s panicked: %v", what, v)
			n, err = 0, fmt.Errorf("panic: %v", v)
		}
	}()
	return fn()
}

func (c *checker) testZeroLength(t *testing.T, src sources.Source) {
	m := newModel(c.size, c.ref)
	for _, off := range []int64{0, c.size / 2, c.size} {
		if n, err := src.ReadAt(nil, off); n != 0 || err != nil {
			t.Errorf("ReadAt(nil, off=%d) = %d, %v, want 0, nil", off, n, err)
		}
		if n, err := src.ReadAt([]byte{}, off); n != 0 || err != nil {
			t.Errorf("ReadAt([]byte{}, off=%d) = %d, %v, want 0, nil", off, n, err)
		}
		if c.caps.ReadOnly {
			continue // whether ErrReadOnly or nothing comes first is up to the source
		}
		if n, err := src.WriteAt(nil, off); n != 0 || err != nil {
			t.Errorf("WriteAt(nil, off=%d) = %d, %v, want 0, nil", off, n, err)
		}
		if err := src.Trim(off, 0); err != nil {
			t.Errorf("Trim(off=%d, len=0) = %v, want nil", off, err)
		}
		if err := src.Zero(off, 0, false); err != nil {
			t.Errorf("Zero(off=%d, len=0, mayTrim=false) = %v, want nil", off, err)
		}
		if err := src.Zero(off, 0, true); err != nil {
			t.Errorf("Zero(off=%d, len=0, mayTrim=true) = %v, want nil", off, err)
		}
	}
	// Nothing changed.
	for _, off := range []int64{0, c.size / 2, c.size - 1} {
		n := int(min(4096, c.size-off))
		c.checkRead(t, src, m, off, n)
	}
}

func (c *checker) testReadParallel(t *testing.T, src sources.Source) {
	m := newModel(c.size, c.ref)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := newRand(fmt.Sprint(t.Name(), g))
			for range iters(32) {
				n := c.randLen(r)
				if !c.checkRead(t, src, m, c.randOff(r, n), n) {
					return
				}
			}
		})
	}
	wg.Wait()
}

func (c *checker) testReadOnly(t *testing.T, src sources.Source) {
	m := newModel(c.size, c.ref)
	n := int(min(c.size, 8192))
	off := c.size - int64(n)
	p := make([]byte, n)
	fillRandom(newRand(t.Name()), p)
	if got, err := src.WriteAt(p, off); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("WriteAt(off=%d, len=%d) = %d, %v, want 0, ErrReadOnly", off, n, got, err)
	}
	if err := src.Trim(off, int64(n)); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("Trim(off=%d, len=%d) = %v, want ErrReadOnly", off, n, err)
	}
	for _, mayTrim := range []bool{false, true} {
		if err := src.Zero(off, int64(n), mayTrim); !errors.Is(err, sources.ErrReadOnly) {
			t.Errorf("Zero(off=%d, len=%d, mayTrim=%v) = %v, want ErrReadOnly", off, n, mayTrim, err)
		}
	}
	c.checkRead(t, src, m, off, n)
}

func (c *checker) write(t *testing.T, src sources.Source, m *model, p []byte, off int64) bool {
	t.Helper()
	n, err := src.WriteAt(p, off)
	if n != len(p) || err != nil {
		t.Errorf("WriteAt(off=%d, len=%d) = %d, %v, want %d, nil", off, len(p), n, err, len(p))
		return false
	}
	m.write(p, off)
	return true
}

// margin is how far around a modified range checks look, to catch writes
// that spill over.
const margin = 4096 + 17

// checkAround reads [off-margin, off+n+margin), clamped to the source.
func (c *checker) checkAround(t *testing.T, src sources.Source, m *model, off int64, n int) bool {
	t.Helper()
	start := max(0, off-margin)
	end := off + int64(n) // in range, so no overflow
	end += min(margin, c.size-end)
	return c.checkRead(t, src, m, start, int(end-start))
}

func (c *checker) testWriteRead(t *testing.T, src sources.Source) {
	r := newRand(t.Name())
	m := newModel(c.size, c.ref)
	type span struct {
		off int64
		n   int
	}
	var written []span
	// The very start and end first, then random ranges.
	for i := range iters(42) {
		n := c.randLen(r)
		off := c.randOff(r, n)
		switch i {
		case 0:
			off = 0
		case 1:
			off = c.size - int64(n)
		}
		p := make([]byte, n)
		fillRandom(r, p)
		if !c.write(t, src, m, p, off) {
			return
		}
		// The source must not keep p.
		fillRandom(r, p)
		if !c.checkAround(t, src, m, off, n) {
			return
		}
		written = append(written, span{off, n})
	}
	// Later writes must not have disturbed what earlier ones left.
	for _, s := range written {
		if !c.checkRead(t, src, m, s.off, s.n) {
			return
		}
	}
	if err := src.Flush(); err != nil {
		t.Errorf("Flush() = %v, want nil", err)
	}
}

// testWriteParallel cuts a region into adjacent pieces at unaligned points,
// so that neighbours share sectors and pages, and has goroutines write,
// zero and trim their pieces at the same time, several rounds over. A
// source that read-modify-writes a shared block without care loses some of
// its neighbours' bytes.
func (c *checker) testWriteParallel(t *testing.T, src sources.Source) {
	r := newRand(t.Name())
	m := newModel(c.size, c.ref)
	const workers = 8
	total := min(c.size, 3<<20)
	base := c.randOff(r, int(total))
	cuts := []int64{base, base + total}
	for range 4*workers - 1 {
		cuts = append(cuts, base+r.Int64N(total))
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i] < cuts[j] })

	type op struct {
		kind    int // 0: write, 1: zero, 2: zero with mayTrim, 3: trim
		off     int64
		data    []byte
		n       int64
		failure error
	}
	logs := make([][]op, workers)
	var wg sync.WaitGroup
	for g := range workers {
		gr := rand.New(rand.NewPCG(r.Uint64(), uint64(g)))
		wg.Go(func() {
			for round := range iters(6) {
				for i := g; i+1 < len(cuts); i += workers {
					off, n := cuts[i], cuts[i+1]-cuts[i]
					if n == 0 {
						continue
					}
					o := op{kind: gr.IntN(4), off: off, n: n}
					if round%2 == 0 {
						o.kind = 0
					}
					switch o.kind {
					case 0:
						o.data = make([]byte, n)
						fillRandom(gr, o.data)
						_, o.failure = src.WriteAt(o.data, off)
					case 1, 2:
						o.failure = src.Zero(off, n, o.kind == 2)
					case 3:
						o.failure = src.Trim(off, n)
					}
					logs[g] = append(logs[g], o)
					if o.failure != nil {
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, log := range logs {
		for _, o := range log {
			if o.failure != nil {
				t.Fatalf("op %d at off=%d, len=%d = %v, want nil", o.kind, o.off, o.n, o.failure)
			}
			switch o.kind {
			case 0:
				m.write(o.data, o.off)
			case 1, 2:
				m.zero(o.off, o.n)
			case 3:
				m.trim(o.off, o.n)
			}
		}
	}
	c.checkAround(t, src, m, base, int(total))
}

func (c *checker) testZero(t *testing.T, src sources.Source) {
	r := newRand(t.Name())
	m := newModel(c.size, c.ref)
	for i := range iters(40) {
		// Zero ranges of written data, of the reference data, and of
		// ranges zeroed before.
		n := c.randLen(r)
		off := c.randOff(r, n)
		if i%3 != 2 {
			w := min(c.size, int64(n)+2*margin)
			woff := min(max(0, off-margin), c.size-w)
			p := make([]byte, w)
			fillRandom(r, p)
			if !c.write(t, src, m, p, woff) {
				return
			}
		}
		mayTrim := i%2 == 1
		if err := src.Zero(off, int64(n), mayTrim); err != nil {
			t.Errorf("Zero(off=%d, len=%d, mayTrim=%v) = %v, want nil", off, n, mayTrim, err)
			return
		}
		m.zero(off, int64(n))
		if !c.checkAround(t, src, m, off, n) {
			return
		}
	}
	// All of a small source, then spot checks.
	if c.size <= wholeLimit {
		if err := src.Zero(0, c.size, true); err != nil {
			t.Errorf("Zero(off=0, len=%d, mayTrim=true) = %v, want nil", c.size, err)
			return
		}
		m.zero(0, c.size)
		for range 20 {
			n := c.randLen(r)
			if !c.checkRead(t, src, m, c.randOff(r, n), n) {
				return
			}
		}
	}
}

func (c *checker) testTrim(t *testing.T, src sources.Source) {
	r := newRand(t.Name())
	m := newModel(c.size, c.ref)
	for i := range iters(40) {
		n := c.randLen(r)
		off := c.randOff(r, n)
		if i%3 != 2 {
			w := min(c.size, int64(n)+2*margin)
			woff := min(max(0, off-margin), c.size-w)
			p := make([]byte, w)
			fillRandom(r, p)
			if !c.write(t, src, m, p, woff) {
				return
			}
		}
		if err := src.Trim(off, int64(n)); err != nil {
			t.Errorf("Trim(off=%d, len=%d) = %v, want nil", off, n, err)
			return
		}
		m.trim(off, int64(n))
		if !c.checkAround(t, src, m, off, n) {
			return
		}
		// A write after a trim reads back exactly.
		if i%4 == 0 {
			p := make([]byte, n)
			fillRandom(r, p)
			if !c.write(t, src, m, p, off) || !c.checkAround(t, src, m, off, n) {
				return
			}
		}
	}
	if c.size <= wholeLimit {
		if err := src.Trim(0, c.size); err != nil {
			t.Errorf("Trim(off=0, len=%d) = %v, want nil", c.size, err)
			return
		}
		m.trim(0, c.size)
		for range 20 {
			n := c.randLen(r)
			if !c.checkRead(t, src, m, c.randOff(r, n), n) {
				return
			}
		}
	}
}

func (c *checker) testFlush(t *testing.T, src sources.Source) {
	if err := src.Flush(); err != nil {
		t.Errorf("Flush() = %v, want nil", err)
	}
	if !c.caps.ReadOnly {
		p := make([]byte, min(c.size, 4096))
		fillRandom(newRand(t.Name()), p)
		m := newModel(c.size, c.ref)
		if !c.write(t, src, m, p, 0) {
			return
		}
		if err := src.Flush(); err != nil {
			t.Errorf("Flush() after WriteAt = %v, want nil", err)
		}
		c.checkRead(t, src, m, 0, len(p))
	}
}

func (c *checker) testCloseTwice(t *testing.T, src sources.Source) {
	if err := src.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	noPanic(t, "second Close", func() (int, error) { return 0, src.Close() })
}
