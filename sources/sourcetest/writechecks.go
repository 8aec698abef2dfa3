package sourcetest

import (
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// wholeLimit is the largest size for which Zero and Trim are checked on
// the whole source: the model costs about 1 KiB per 512 bytes modified.
const wholeLimit = 16 << 20

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

	logs := make([][]parallelOp, workers)
	var wg sync.WaitGroup
	for g := range workers {
		gr := rand.New(rand.NewPCG(r.Uint64(), uint64(g)))
		wg.Go(func() { logs[g] = modifyPieces(src, gr, cuts, g, workers) })
	}
	wg.Wait()
	replay(t, m, logs)
	c.checkAround(t, src, m, base, int(total))
}

// parallelOp is one request of testWriteParallel, logged for the model.
type parallelOp struct {
	kind    int // 0: write, 1: zero, 2: zero with mayTrim, 3: trim
	off     int64
	data    []byte
	n       int64
	failure error
}

// modifyPieces writes, zeroes or trims the pieces first, first+stride, ...
// between cuts, over several rounds (writes only in even rounds), and
// returns the requests it made, up to the first that failed.
func modifyPieces(src sources.Source, r *rand.Rand, cuts []int64, first, stride int) []parallelOp {
	var log []parallelOp
	for round := range iters(6) {
		for i := first; i+1 < len(cuts); i += stride {
			off, n := cuts[i], cuts[i+1]-cuts[i]
			if n == 0 {
				continue
			}
			o := parallelOp{kind: r.IntN(4), off: off, n: n}
			if round%2 == 0 {
				o.kind = 0
			}
			switch o.kind {
			case 0:
				o.data = make([]byte, n)
				fillRandom(r, o.data)
				_, o.failure = src.WriteAt(o.data, off)
			case 1, 2:
				o.failure = src.Zero(off, n, o.kind == 2)
			case 3:
				o.failure = src.Trim(off, n)
			}
			log = append(log, o)
			if o.failure != nil {
				return log
			}
		}
	}
	return log
}

// replay applies the logged requests to the model, failing t at the first
// request that failed.
func replay(t *testing.T, m *model, logs [][]parallelOp) {
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
