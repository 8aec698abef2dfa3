package blockcache

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
)

// TestCacheLend: a loan holds the right bytes (zero chunks included),
// stays intact while reads go on through a budget far smaller than the
// image (its chunks are neither evicted nor reused, and stay charged), and
// is let go at release; ranges outside the image and spilled bytes are
// refused.
func TestCacheLend(t *testing.T) {
	const chunk = 64 << 10
	data := testData(4 << 20)
	f := newFake(data, 1<<20, 1<<20, 1<<20, 1<<20)
	c, err := New(f.segs, f.open, Options{Chunk: chunk, Budget: 512 << 10, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	off, n := int64(chunk/2), int64(3*chunk)
	bufs, release, err := c.Lend(off, n)
	if err != nil {
		t.Fatal(err)
	}
	if got := bytes.Join(bufs, nil); !bytes.Equal(got, data[off:off+n]) {
		t.Fatal("lent bytes differ from the image's")
	}
	if len(bufs) != 4 {
		t.Errorf("%d slices for 3 chunks from mid-chunk, want 4", len(bufs))
	}
	// Read the rest of the image twice over: eight times the budget.
	p := make([]byte, chunk)
	for pass := range 2 {
		for o := int64(1 << 20); o < 4<<20; o += chunk {
			if _, err := c.ReadAt(p, o); err != nil {
				t.Fatalf("pass %d: read at %d: %v", pass, o, err)
			}
		}
	}
	if got := bytes.Join(bufs, nil); !bytes.Equal(got, data[off:off+n]) {
		t.Fatal("lent bytes changed while other chunks came and went")
	}
	if st := c.Stats(); st.Used < 4*chunk {
		t.Errorf("Used = %d while 4 chunks are lent, want at least %d", st.Used, 4*chunk)
	}
	release()
	for o := int64(1 << 20); o < 4<<20; o += chunk {
		if _, err := c.ReadAt(p, o); err != nil {
			t.Fatal(err)
		}
	}
	if st := c.Stats(); st.Peak > 512<<10+2*chunk+4*4096 {
		t.Errorf("Peak = %d, over the budget (%d) by more than a chunk in decode and the lent ones", st.Peak, 512<<10)
	}
	for _, tt := range []struct{ off, n int64 }{{-1, 10}, {0, 0}, {4 << 20, 1}, {4<<20 - 10, 11}} {
		if _, _, err := c.Lend(tt.off, tt.n); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Lend(%d, %d) = %v, want EINVAL", tt.off, tt.n, err)
		}
	}
}

// TestCacheLendDropped: chunks dropped while lent (their segment's decode
// failed, or the cache closed) keep their bytes until released.
func TestCacheLendDropped(t *testing.T) {
	data := testData(2 << 20)
	f := newFake(data, 1<<20, 1<<20)
	c, err := New(f.segs, f.open, Options{Chunk: 256 << 10, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	bufs, release, err := c.Lend(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	for _, e := range c.chunks {
		c.remove(e)
	}
	used := c.used
	c.mu.Unlock()
	if used != 1<<20 {
		t.Errorf("used = %d with 1 MiB lent and dropped, want %d", used, 1<<20)
	}
	if _, err := c.ReadAt(make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(bufs, nil), data[:1<<20]) {
		t.Fatal("lent bytes changed after their chunks were dropped")
	}
	release()
	if st := c.Stats(); st.Used != 1<<20 {
		t.Errorf("Used = %d after release, want the 1 MiB read again only", st.Used)
	}
	bufs, release, err = c.Lend(1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !bytes.Equal(bytes.Join(bufs, nil), data[1<<20:]) {
		t.Fatal("lent bytes changed when the cache closed")
	}
	release()
	if _, _, err := c.Lend(0, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Lend after Close = %v, want ErrClosed", err)
	}
}

// TestCacheLendAllocs: a warm Lend and its release allocate nothing.
func TestCacheLendAllocs(t *testing.T) {
	data := testData(1 << 20)
	f := newFake(data, 1<<20)
	c, err := New(f.segs, f.open, Options{Chunk: 128 << 10, Readahead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lend := func() {
		_, release, err := c.Lend(4096, 900<<10)
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	lend()
	if a := testing.AllocsPerRun(100, lend); a != 0 {
		t.Errorf("%v allocations per Lend and release, want 0", a)
	}
}
