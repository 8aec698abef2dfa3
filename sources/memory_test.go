package sources_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

const pageSize = sources.MemoryPageSize

func newMemory(t testing.TB, size int64) *sources.Memory {
	t.Helper()
	m, err := sources.NewMemory(size)
	if err != nil {
		t.Fatalf("NewMemory(%d) = %v", size, err)
	}
	return m
}

func TestMemoryConformance(t *testing.T) {
	sizes := []struct {
		name string
		size int64
	}{
		{name: "one byte", size: 1},
		{name: "one page", size: pageSize},
		{name: "partial last page", size: 3*pageSize + 100},
		{name: "4MiB", size: 4 << 20},
		{name: "max", size: math.MaxInt64},
	}
	for _, tt := range sizes {
		t.Run(tt.name, func(t *testing.T) {
			sourcetest.RunSparse(t, func(t *testing.T) sources.Source {
				return newMemory(t, tt.size)
			}, tt.size, sourcetest.Zeros{})
		})
	}
}

// TestMemoryConformanceWithData checks a Memory that holds data before the
// checks start, so that reads and trims meet allocated pages.
func TestMemoryConformanceWithData(t *testing.T) {
	want := make([]byte, 2<<20+pageSize/2)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(r.Uint32())
	}
	clear(want[pageSize : 3*pageSize]) // a hole
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		m := newMemory(t, int64(len(want)))
		if _, err := m.WriteAt(want, 0); err != nil {
			t.Fatalf("WriteAt = %v", err)
		}
		return m
	}, want)
}

func TestNewMemoryErrors(t *testing.T) {
	tests := []struct {
		name string
		size int64
	}{
		{name: "zero", size: 0},
		{name: "negative", size: -1},
		{name: "min", size: math.MinInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := sources.NewMemory(tt.size)
			if !errors.Is(err, sources.ErrEmpty) {
				t.Errorf("NewMemory(%d) = %v, %v, want nil, ErrEmpty", tt.size, m, err)
			}
		})
	}
}

func TestMemoryMaxSizeEnd(t *testing.T) {
	const size = math.MaxInt64
	m := newMemory(t, size)
	defer m.Close()

	p := bytes.Repeat([]byte{0xff}, 4096)
	if n, err := m.ReadAt(p, size-int64(len(p))); n != len(p) || err != nil {
		t.Fatalf("ReadAt(off=%d, len=%d) = %d, %v, want %d, nil", size-int64(len(p)), len(p), n, err, len(p))
	}
	if !bytes.Equal(p, make([]byte, len(p))) {
		t.Errorf("ReadAt at the end of a new memory returned non-zero bytes")
	}

	// The very last byte, and the first.
	for _, off := range []int64{size - 1, 0} {
		if n, err := m.WriteAt([]byte{0x42}, off); n != 1 || err != nil {
			t.Fatalf("WriteAt(off=%d, len=1) = %d, %v, want 1, nil", off, n, err)
		}
		got := []byte{0}
		if n, err := m.ReadAt(got, off); n != 1 || err != nil || got[0] != 0x42 {
			t.Errorf("ReadAt(off=%d, len=1) = %d, %v, %#x, want 1, nil, 0x42", off, n, err, got[0])
		}
	}
	if got, want := m.Resident(), int64(2*pageSize); got != want {
		t.Errorf("Resident() = %d, want %d", got, want)
	}
	// Trimming everything visits only what exists.
	if err := m.Trim(0, size); err != nil {
		t.Fatalf("Trim(0, %d) = %v", size, err)
	}
	// The last page is partial (2^63-1 is not a multiple of the page
	// size), so it is cleared, not freed.
	if got, want := m.Resident(), int64(pageSize); got != want {
		t.Errorf("Resident() after Trim of everything = %d, want %d", got, want)
	}
	got := []byte{0xff}
	if _, err := m.ReadAt(got, size-1); err != nil || got[0] != 0 {
		t.Errorf("ReadAt(off=%d, len=1) after Trim = %v, %#x, want nil, 0", size-1, err, got[0])
	}
	if n, err := m.ReadAt(got, size); err == nil {
		t.Errorf("ReadAt(off=%d, len=1) = %d, nil, want an error", int64(size), n)
	}
}

// TestMemoryResident checks that memory follows the data written, step by
// step on one Memory.
func TestMemoryResident(t *testing.T) {
	ones := func(n int) []byte { return bytes.Repeat([]byte{1}, n) }
	const ps = pageSize
	m := newMemory(t, 1<<40)
	defer m.Close()
	steps := []struct {
		name string
		op   func() error
		want int64 // Resident afterwards, in pages
	}{
		{name: "new", op: func() error { return nil }, want: 0},
		{name: "read allocates nothing", op: func() error { _, err := m.ReadAt(make([]byte, 1<<20), 12345); return err }, want: 0},
		{name: "zeros allocate nothing", op: func() error { _, err := m.WriteAt(make([]byte, 1<<20), 0); return err }, want: 0},
		{name: "one byte allocates a page", op: func() error { _, err := m.WriteAt(ones(1), 5*ps+7); return err }, want: 1},
		{name: "same page again", op: func() error { _, err := m.WriteAt(ones(100), 5*ps+1000); return err }, want: 1},
		{name: "write across a boundary", op: func() error { _, err := m.WriteAt(ones(2), 8*ps-1); return err }, want: 3},
		{name: "far away", op: func() error { _, err := m.WriteAt(ones(4096), 1<<39); return err }, want: 4},
		{name: "partial zero keeps the page", op: func() error { return m.Zero(5*ps, ps-1, true) }, want: 4},
		{name: "whole-page zeros free it", op: func() error { _, err := m.WriteAt(make([]byte, ps), 5*ps); return err }, want: 3},
		{name: "trim frees whole pages", op: func() error { return m.Trim(7*ps, 2*ps) }, want: 1},
		{name: "zero without mayTrim frees too", op: func() error { return m.Zero(1<<39, ps, false) }, want: 0},
		{name: "refill", op: func() error { _, err := m.WriteAt(ones(10*ps), 0); return err }, want: 10},
		{name: "unaligned trim frees only covered pages", op: func() error { return m.Trim(ps/2, 3*ps) }, want: 8},
	}
	for _, s := range steps {
		if err := s.op(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := m.Resident(); got != s.want*ps {
			t.Errorf("%s: Resident() = %d (%d pages), want %d pages", s.name, got, got/ps, s.want)
		}
	}
	// The unaligned trim zeroed the partial pages' parts it covered.
	p := make([]byte, 4*ps)
	if _, err := m.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	for i, b := range p {
		want := byte(1)
		if i >= ps/2 && i < ps/2+3*ps {
			want = 0
		}
		if b != want {
			t.Fatalf("byte %d = %d, want %d", i, b, want)
		}
	}
}

func TestMemoryClose(t *testing.T) {
	m := newMemory(t, 1<<20)
	if _, err := m.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if got := m.Resident(); got != 0 {
		t.Errorf("Resident() after Close = %d, want 0", got)
	}
	if _, err := m.ReadAt(make([]byte, 1), 0); err == nil {
		t.Errorf("ReadAt after Close = nil, want an error")
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

// TestMemoryConcurrent hammers a few pages with overlapping reads, writes,
// trims and zeros, for the race detector, then checks that goroutines
// writing disjoint ranges of the same pages kept their own bytes.
func TestMemoryConcurrent(t *testing.T) {
	const size = 8 * pageSize
	m := newMemory(t, size)
	defer m.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			buf := make([]byte, 3*pageSize)
			for range 300 {
				n := 1 + r.Int64N(int64(len(buf)))
				off := r.Int64N(size - n + 1)
				var err error
				switch r.IntN(5) {
				case 0, 1:
					_, err = m.ReadAt(buf[:n], off)
				case 2:
					buf[0] = byte(g + 1)
					_, err = m.WriteAt(buf[:n], off)
				case 3:
					err = m.Trim(off, n)
				case 4:
					err = m.Zero(off, n, r.IntN(2) == 0)
				}
				if err != nil {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()

	// Disjoint interleaved stripes of 100 bytes, so every page is shared.
	const stripe = 100
	for g := range 8 {
		wg.Go(func() {
			p := bytes.Repeat([]byte{byte(g + 1)}, stripe)
			for round := range 20 {
				for off := int64(g * stripe); off+stripe <= size; off += 8 * stripe {
					var err error
					if round == 10 {
						err = m.Zero(off, stripe, true)
					} else {
						_, err = m.WriteAt(p, off)
					}
					if err != nil {
						t.Errorf("goroutine %d: %v", g, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	all := make([]byte, size)
	if _, err := m.ReadAt(all, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i+8*stripe <= size; i++ {
		if want := byte((i/stripe)%8 + 1); all[i] != want {
			t.Fatalf("byte %d = %d, want %d", i, all[i], want)
		}
	}
}

func BenchmarkMemoryRead4K(b *testing.B) {
	m := newMemory(b, 1<<30)
	defer m.Close()
	data := bytes.Repeat([]byte{7}, 64<<20)
	if _, err := m.WriteAt(data, 0); err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 4096)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	off := int64(0)
	for b.Loop() {
		if _, err := m.ReadAt(p, off); err != nil {
			b.Fatal(err)
		}
		off = (off + 4096) % int64(len(data))
	}
}

func BenchmarkMemoryWrite4K(b *testing.B) {
	for _, tt := range []struct {
		name string
		par  bool
	}{{name: "serial"}, {name: "parallel", par: true}} {
		b.Run(tt.name, func(b *testing.B) {
			const region = 64 << 20
			m := newMemory(b, 1<<30)
			defer m.Close()
			// Allocate the pages first: the benchmark measures writes,
			// not the first touch.
			if _, err := m.WriteAt(bytes.Repeat([]byte{1}, region), 0); err != nil {
				b.Fatal(err)
			}
			p := bytes.Repeat([]byte{9}, 4096)
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			b.ResetTimer()
			if !tt.par {
				off := int64(0)
				for b.Loop() {
					if _, err := m.WriteAt(p, off); err != nil {
						b.Fatal(err)
					}
					off = (off + 4096) % region
				}
				return
			}
			b.RunParallel(func(pb *testing.PB) {
				off := rand.Int64N(region) &^ 4095
				for pb.Next() {
					if _, err := m.WriteAt(p, off); err != nil {
						panic(fmt.Sprint(err))
					}
					off = (off + 4096) % region
				}
			})
		})
	}
}
