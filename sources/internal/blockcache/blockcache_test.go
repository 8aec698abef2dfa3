package blockcache

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeFormat serves data split into segments of the given sizes; its
// decoders copy slowly enough that concurrent reads overlap, and count how
// often each segment is opened.
type fakeFormat struct {
	data   []byte
	segs   []Segment
	opened []atomic.Int64
	active atomic.Int64
	peak   atomic.Int64
	fail   int // segment whose decoder fails at its end, or -1
}

func newFake(data []byte, sizes ...int64) *fakeFormat {
	f := &fakeFormat{data: data, fail: -1}
	var off int64
	for _, s := range sizes {
		f.segs = append(f.segs, Segment{Off: off, Size: s, Mem: 4096})
		off += s
	}
	f.opened = make([]atomic.Int64, len(sizes))
	return f
}

type fakeReader struct {
	f   *fakeFormat
	seg int
	r   *bytes.Reader
}

func (r *fakeReader) Read(p []byte) (int, error) {
	n := r.f.active.Add(1)
	for {
		pk := r.f.peak.Load()
		if n <= pk || r.f.peak.CompareAndSwap(pk, n) {
			break
		}
	}
	defer r.f.active.Add(-1)
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	n2, err := r.r.Read(p)
	time.Sleep(100 * time.Microsecond) // a decoder takes time
	if r.seg == r.f.fail && r.r.Len() == 0 {
		return n2, errors.New("check mismatch")
	}
	return n2, err
}

func (f *fakeFormat) open(i int) (io.Reader, error) {
	f.opened[i].Add(1)
	s := f.segs[i]
	return &fakeReader{f: f, seg: i, r: bytes.NewReader(f.data[s.Off : s.Off+s.Size])}, nil
}

func testData(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		if (i/4096)%3 == 0 {
			continue // zeros
		}
		for j := i; j < min(n, i+4096); j++ {
			b[j] = byte(rng.Uint32())
		}
	}
	return b
}

func TestCacheReads(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int64
		opts  Options
		spill bool
	}{
		{name: "small segments", sizes: []int64{100 << 10, 300 << 10, 5000, 1 << 20}, opts: Options{Chunk: 64 << 10}},
		{name: "large segments parked", sizes: []int64{3 << 20, 5<<20 + 17}, opts: Options{Chunk: 256 << 10, Budget: 4 << 20}},
		{name: "no readahead", sizes: []int64{1 << 20, 1 << 20, 1 << 20}, opts: Options{Chunk: 128 << 10, Readahead: -1}},
		{name: "spill", sizes: []int64{3<<20 + 5}, opts: Options{Chunk: 256 << 10, SpillDir: t.TempDir()}, spill: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var total int64
			for _, s := range tt.sizes {
				total += s
			}
			data := testData(int(total))
			f := newFake(data, tt.sizes...)
			if tt.spill {
				f.segs[0].Spill = true
			}
			c, err := New(f.segs, f.open, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var wg sync.WaitGroup
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(3, uint64(g)))
					for k := 0; k < 50; k++ {
						off := rng.Int64N(total)
						n := min(total-off, 1+rng.Int64N(200<<10))
						got := make([]byte, n)
						if _, err := c.ReadAt(got, off); err != nil {
							t.Errorf("ReadAt(off=%d, len=%d) = %v", off, n, err)
							return
						}
						if !bytes.Equal(got, data[off:off+n]) {
							t.Errorf("ReadAt(off=%d, len=%d): wrong bytes", off, n)
							return
						}
					}
				}()
			}
			wg.Wait()
			// Sequentially, to the end, then past it.
			got := make([]byte, total)
			for off := int64(0); off < total; off += 100 << 10 {
				end := min(total, off+100<<10)
				if _, err := c.ReadAt(got[off:end], off); err != nil {
					t.Fatalf("ReadAt(off=%d) = %v", off, err)
				}
			}
			if !bytes.Equal(got, data) {
				t.Fatal("sequential read: wrong bytes")
			}
			if n, err := c.ReadAt(make([]byte, 10), total); n != 0 || err != io.EOF {
				t.Errorf("ReadAt(off=size) = %d, %v, want 0, EOF", n, err)
			}
			st := c.Stats()
			if st.Peak > st.Budget {
				t.Errorf("Peak = %d, want <= budget %d", st.Peak, st.Budget)
			}
		})
	}
}

// A segment is decoded once however many readers want it at once.
func TestCacheNoDuplicateDecode(t *testing.T) {
	data := testData(6 << 20)
	f := newFake(data, 2<<20, 2<<20, 2<<20)
	c, err := New(f.segs, f.open, Options{Chunk: 256 << 10, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(2<<20) + int64(g)*50000
			got := make([]byte, 4096)
			if _, err := c.ReadAt(got, off); err != nil || !bytes.Equal(got, data[off:off+4096]) {
				t.Errorf("ReadAt(off=%d) = %v or wrong bytes", off, err)
			}
		}()
	}
	wg.Wait()
	for i := range f.opened {
		want := int64(0)
		if i == 1 {
			want = 1
		}
		if got := f.opened[i].Load(); got != want {
			t.Errorf("segment %d opened %d times, want %d", i, got, want)
		}
	}
}

// Different segments decode at the same time.
func TestCacheParallelDecode(t *testing.T) {
	data := testData(8 << 20)
	f := newFake(data, 2<<20, 2<<20, 2<<20, 2<<20)
	c, err := New(f.segs, f.open, Options{Chunk: 2 << 20, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]byte, 512)
			c.ReadAt(got, int64(i)<<21+100)
		}()
	}
	wg.Wait()
	if f.peak.Load() < 2 {
		t.Errorf("at most %d decoders ran at once, want several", f.peak.Load())
	}
}

// Sequential reads through a segment too large to decode whole continue
// its parked decoder.
func TestCacheIncrementalSequential(t *testing.T) {
	data := testData(12 << 20)
	f := newFake(data, 12<<20)
	c, err := New(f.segs, f.open, Options{Chunk: 1 << 20, Budget: 8 << 20, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	for off := int64(0); off < 12<<20; off += int64(len(buf)) {
		if _, err := c.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
			t.Fatalf("ReadAt(off=%d) = %v or wrong bytes", off, err)
		}
	}
	st := c.Stats()
	if st.Decodes != 1 || f.opened[0].Load() != 1 {
		t.Errorf("Decodes = %d, opened %d times, want 1 (resumed %d times)", st.Decodes, f.opened[0].Load(), st.Resumes)
	}
	if st.Peak > st.Budget {
		t.Errorf("Peak = %d, want <= %d", st.Peak, st.Budget)
	}
}

// Sequential reads decode the segments ahead in the background.
func TestCacheReadahead(t *testing.T) {
	data := testData(8 << 20)
	f := newFake(data, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20)
	c, err := New(f.segs, f.open, Options{Chunk: 1 << 20, Readahead: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512<<10)
	for off := int64(0); off < 8<<20; off += int64(len(buf)) {
		if _, err := c.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	st := c.Stats()
	if st.Prefetch == 0 {
		t.Errorf("Prefetch = 0, want readahead decodes")
	}
	for i := range f.opened {
		if n := f.opened[i].Load(); n != 1 {
			t.Errorf("segment %d opened %d times, want 1", i, n)
		}
	}
}

// A decoder that fails at the end fails the read, drops what it published
// and does not poison other segments.
func TestCacheDecodeError(t *testing.T) {
	data := testData(3 << 20)
	f := newFake(data, 1<<20, 1<<20, 1<<20)
	f.fail = 1
	c, err := New(f.segs, f.open, Options{Chunk: 256 << 10, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ReadAt(make([]byte, 1<<20), 1<<20); err == nil {
		t.Errorf("ReadAt of the failing segment = nil error, want the decoder's")
	}
	buf := make([]byte, 4096)
	if _, err := c.ReadAt(buf, 1<<20+5000); err == nil {
		t.Errorf("later ReadAt in the failing segment = nil error, want the decoder's")
	}
	if _, err := c.ReadAt(buf, 2<<20); err != nil || !bytes.Equal(buf, data[2<<20:2<<20+4096]) {
		t.Errorf("ReadAt in a good segment = %v or wrong bytes", err)
	}
}

func TestCacheTransientError(t *testing.T) {
	data := testData(2 << 20)
	f := newFake(data, 1<<20, 1<<20)
	f.fail = 1
	c, err := New(f.segs, f.open, Options{Chunk: 256 << 10, Readahead: -1, Transient: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ReadAt(make([]byte, 1<<20), 1<<20); err == nil {
		t.Fatal("ReadAt of the failing segment = nil error, want the decoder's")
	}
	buf := make([]byte, 4096)
	f.fail = -1 // the failure passes
	if _, err := c.ReadAt(buf, 1<<20+5000); err != nil || !bytes.Equal(buf, data[1<<20+5000:1<<20+5000+4096]) {
		t.Fatalf("ReadAt after a transient failure = %v or wrong bytes, want the segment opened again", err)
	}
	if n := f.opened[1].Load(); n != 2 {
		t.Errorf("the failed segment was opened %d times, want 2", n)
	}
}

func TestCacheRejectsGaps(t *testing.T) {
	_, err := New([]Segment{{Off: 0, Size: 10}, {Off: 11, Size: 5}}, nil, Options{})
	if err == nil {
		t.Error("New with a gap between segments = nil error")
	}
}

// With more readers than the budget holds decodes for, a decode's chunks
// stay until its readers have them: every segment is decoded once, not
// again and again.
func TestCacheNoThrash(t *testing.T) {
	data := testData(8 << 20)
	f := newFake(data, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20)
	for i := range f.segs {
		f.segs[i].Mem = 1 << 20
	}
	c, err := New(f.segs, f.open, Options{Chunk: 256 << 10, Budget: 3 << 20, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i)<<20 + 900<<10
			got := make([]byte, 4096)
			if _, err := c.ReadAt(got, off); err != nil || !bytes.Equal(got, data[off:off+4096]) {
				t.Errorf("ReadAt(off=%d) = %v, or wrong bytes", off, err)
			}
		}()
	}
	wg.Wait()
	for i := range f.opened {
		if n := f.opened[i].Load(); n != 1 {
			t.Errorf("segment %d decoded %d times, want 1", i, n)
		}
	}
}

// memReader is a fakeReader that reports, once opened, more memory than
// its segment's estimate.
type memReader struct {
	*fakeReader
	mem int64
}

func (m memReader) Mem() int64 { return m.mem }

// A decoder that reports its real memory once opened is charged that, not
// its segment's estimate: with decoders of half the budget, at most two
// decode at once, however many readers ask.
func TestCacheMemReader(t *testing.T) {
	data := testData(16 << 20)
	sizes := make([]int64, 16)
	for i := range sizes {
		sizes[i] = 1 << 20
	}
	f := newFake(data, sizes...)
	const budget = 8 << 20
	open := func(i int) (io.Reader, error) {
		r, _ := f.open(i)
		return memReader{r.(*fakeReader), budget / 2}, nil
	}
	c, err := New(f.segs, open, Options{Budget: budget, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := range sizes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			off := int64(i) << 20
			if _, err := c.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
				t.Errorf("ReadAt(%d) = %v, or wrong bytes", off, err)
			}
		}()
	}
	wg.Wait()
	if p := f.peak.Load(); p > 2 {
		t.Errorf("%d decoders ran at once, want at most 2 (each reports half the budget)", p)
	}
	if st := c.Stats(); st.Peak > budget+2<<20 {
		t.Errorf("peak use %d, budget %d", st.Peak, budget)
	}
}

// Spill segments larger than the spill bound are refused by New, with the
// figures.
func TestCacheSpillLimit(t *testing.T) {
	data := testData(4 << 20)
	f := newFake(data, 4<<20)
	f.segs[0].Spill = true
	for _, tt := range []struct {
		limit int64
		err   string
	}{
		{limit: 1 << 20, err: "the image's 4 MiB of uncompressed data would be decoded into a temporary file, but at most 1 MiB may be decoded"},
		{limit: 4<<20 - 1, err: "at most 4.0 MiB"},
		{limit: 4 << 20},
		{limit: -1},
	} {
		c, err := New(f.segs, f.open, Options{SpillDir: t.TempDir(), SpillLimit: tt.limit})
		var se *SpillError
		if tt.err != "" {
			if err == nil || !errors.As(err, &se) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("limit %d: New = %v, want a SpillError containing %q", tt.limit, err, tt.err)
			}
			if c != nil {
				c.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("limit %d: New = %v", tt.limit, err)
			continue
		}
		buf := make([]byte, len(data))
		if _, err := c.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data) {
			t.Errorf("limit %d: ReadAt = %v, or wrong bytes", tt.limit, err)
		}
		c.Close()
	}
}

// A spill decode that would write past the bound (the free space shrank
// since New) fails its reads with EIO and the figures, and writes no more.
func TestCacheSpillRunsPastBound(t *testing.T) {
	data := testData(4 << 20)
	f := newFake(data, 4<<20)
	f.segs[0].Spill = true
	gate := make(chan struct{})
	open := func(i int) (io.Reader, error) {
		<-gate
		return f.open(i)
	}
	c, err := New(f.segs, open, Options{SpillDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.spill.mu.Lock()
	c.spill.bound.Bytes = 1 << 20
	c.spill.mu.Unlock()
	close(gate)
	buf := make([]byte, 4096)
	_, err = c.ReadAt(buf, 4<<20-4096)
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "reached its bound after") {
		t.Errorf("ReadAt past the bound = %v, want EIO with the figures", err)
	}
	if _, err := c.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:4096]) {
		t.Errorf("ReadAt(0) = %v, or wrong bytes", err)
	}
}

// TestCacheUntouched: a range is untouched while no chunk of it is cached
// and no decode is producing one.
func TestCacheUntouched(t *testing.T) {
	data := testData(6 << 20)
	f := newFake(data, 2<<20, 2<<20, 2<<20)
	gate := make(chan struct{})
	open := func(i int) (io.Reader, error) {
		if i == 2 {
			<-gate
		}
		return f.open(i)
	}
	c, err := New(f.segs, open, Options{Chunk: 256 << 10, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ReadAt(make([]byte, 4096), 2<<20+300<<10); err != nil { // chunk 1 of segment 1
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := c.ReadAt(make([]byte, 4096), 5<<20) // segment 2, its decode held at open
		done <- err
	}()
	for c.Untouched(4<<20, 4096) {
		time.Sleep(time.Millisecond) // until the decode of segment 2 has started
	}
	for _, tc := range []struct {
		name   string
		off, n int64
		want   bool
	}{
		{"segment 0", 0, 2 << 20, true},
		{"the chunk read", 2<<20 + 256<<10, 256 << 10, false},
		{"across it", 2 << 20, 1 << 20, false},
		{"being decoded", 6<<20 - 4096, 4096, false},
		{"past the end", 6<<20 - 4096, 8192, false},
		{"empty", 0, 0, false},
	} {
		if got := c.Untouched(tc.off, tc.n); got != tc.want {
			t.Errorf("%s: Untouched(%d, %d) = %v, want %v", tc.name, tc.off, tc.n, got, tc.want)
		}
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
