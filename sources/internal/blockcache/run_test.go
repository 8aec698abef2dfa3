package blockcache

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
)

// fakeRuns serves f's segments first..first+n-1 as one stream, counting
// the runs and the bytes each gives; a run that reaches failAt (an
// offset, -1: none) fails there.
type fakeRuns struct {
	f      *fakeFormat
	runs   atomic.Int64
	bytes  atomic.Int64
	failAt atomic.Int64
}

type runReader struct {
	r   *fakeRuns
	off int64
	src *bytes.Reader
}

func (r *runReader) Read(p []byte) (int, error) {
	if fail := r.r.failAt.Load(); fail >= r.off && fail < r.off+int64(len(p)) {
		p = p[:fail-r.off]
		if len(p) == 0 {
			return 0, errors.New("connection reset")
		}
	}
	n, err := r.src.Read(p)
	r.off += int64(n)
	r.r.bytes.Add(int64(n))
	return n, err
}

func (r *fakeRuns) open(first, n int) (io.Reader, error) {
	r.runs.Add(1)
	lo := r.f.segs[first].Off
	last := r.f.segs[first+n-1]
	return &runReader{r: r, off: lo, src: bytes.NewReader(r.f.data[lo : last.Off+last.Size])}, nil
}

func newRuns(t *testing.T, segs int, opts Options) (*Cache, *fakeRuns) {
	sizes := make([]int64, segs)
	for i := range sizes {
		sizes[i] = 64 << 10
	}
	f := newFake(testData(segs<<16), sizes...)
	for i := range f.segs {
		f.segs[i].Mem = 0
	}
	runs := &fakeRuns{f: f}
	runs.failAt.Store(-1)
	opts.Chunk, opts.OpenRun, opts.Transient = 64<<10, runs.open, true
	c, err := New(f.segs, f.open, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, runs
}

// Sequential reads are served by a few runs that grow up to RunMax, every
// segment fetched once, within the budget.
func TestCacheRuns(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     Options
		maxFetch int64 // segment decoders and runs opened, at most
	}{
		{"roomy", Options{Budget: 64 << 20, RunMax: 1 << 20, Readahead: 2}, 14},
		{"tight budget", Options{Budget: 1 << 20, RunMax: 1 << 20, Readahead: 2}, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, runs := newRuns(t, 128, tc.opts)
			data := runs.f.data
			buf := make([]byte, 128<<10)
			for off := int64(0); off < int64(len(data)); off += int64(len(buf)) {
				if _, err := c.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
					t.Fatalf("ReadAt(%d) = %v, or wrong bytes", off, err)
				}
			}
			st := c.Stats()
			if st.Runs == 0 || st.Runs != runs.runs.Load() {
				t.Errorf("Stats.Runs = %d, runs opened %d: want some, and the same", st.Runs, runs.runs.Load())
			}
			var single int64
			for i := range runs.f.opened {
				single += runs.f.opened[i].Load()
			}
			if n := single + runs.runs.Load(); n > tc.maxFetch {
				t.Errorf("%d decoders and %d runs opened, want at most %d in all", single, runs.runs.Load(), tc.maxFetch)
			}
			if got, want := runs.bytes.Load()+single<<16, int64(len(data)); got != want {
				t.Errorf("%d bytes fetched, want %d: each segment once", got, want)
			}
			if st.Peak > tc.opts.Budget {
				t.Errorf("Peak = %d, over the budget %d", st.Peak, tc.opts.Budget)
			}
		})
	}
}

// A run that breaks fails the reads waiting for the segment it broke in
// (a read that comes later fetches it again), and the segments after it
// are fetched again on demand; the bytes served are right.
func TestCacheRunError(t *testing.T) {
	c, runs := newRuns(t, 64, Options{Budget: 64 << 20, RunMax: 4 << 20, Readahead: 2})
	data := runs.f.data
	buf := make([]byte, 64<<10)
	// The read of segment 1 starts runs from segment 2; one breaks in
	// segment 5.
	runs.failAt.Store(5<<16 + 1000)
	var failed int
	for seg := int64(0); seg < 64; seg++ {
		_, err := c.ReadAt(buf, seg<<16)
		if err != nil {
			failed++
			if seg != 5 {
				t.Errorf("segment %d: %v, want only segment 5 to fail", seg, err)
			}
			runs.failAt.Store(-1)
			if _, err = c.ReadAt(buf, seg<<16); err != nil {
				t.Fatalf("segment %d again: %v", seg, err)
			}
		}
		if !bytes.Equal(buf, data[seg<<16:(seg+1)<<16]) {
			t.Fatalf("segment %d: wrong bytes", seg)
		}
	}
	if again := runs.f.opened[5].Load(); failed > 1 || again != 1 {
		t.Errorf("%d reads failed and segment 5 was fetched alone %d times, want at most one and once", failed, again)
	}
}
