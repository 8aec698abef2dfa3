package bucket

import (
	"bytes"
	"slices"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// testExtents: chunks never written, trimmed or written with zeros are
// holes, written ones data, for the writer that wrote them and for the
// next one (from the store's listing); a reader reports data; a walk
// allocates nothing.
func testExtents(t *testing.T, e *env) {
	const k = 64 << 10
	const size = 16*k + 4096 // the last chunk of 4 KiB
	p := e.disk(t, size, k)
	s := e.open(t, p, Options{CacheSize: 8 * k})
	hole := func(off, n int64) sources.Extent {
		return sources.Extent{Off: off, Length: n, Kind: sources.ExtentHole}
	}
	data := func(off, n int64) sources.Extent {
		return sources.Extent{Off: off, Length: n, Kind: sources.ExtentData}
	}
	check := func(what string, s *Source, off, n int64, want ...sources.Extent) {
		t.Helper()
		if got := sourcetest.Extents(t, s, off, n); !slices.Equal(got, want) {
			t.Errorf("%s: Extents(%d, %d) = %v, want %v", what, off, n, got, want)
		}
	}
	check("a new disk", s, 0, size, hole(0, size))
	write(t, s, []byte("x"), k+100)                       // chunk 1, in part
	write(t, s, bytes.Repeat([]byte{7}, 2*k), 5*k)        // chunks 5 and 6, whole
	write(t, s, bytes.Repeat([]byte{7}, k), 9*k)          // chunk 9, then trimmed
	write(t, s, make([]byte, k), 11*k)                    // chunk 11, zeros
	write(t, s, bytes.Repeat([]byte{1}, 4096), size-4096) // the last chunk
	if err := s.Trim(9*k, k); err != nil {
		t.Fatal(err)
	}
	want := []sources.Extent{hole(0, k), data(k, k), hole(2*k, 3*k), data(5*k, 2*k), hole(7*k, 9*k), data(16*k, 4096)}
	// Chunk 11, written with zeros, is data until its upload finds them.
	check("before a flush", s, 0, 11*k, hole(0, k), data(k, k), hole(2*k, 3*k), data(5*k, 2*k), hole(7*k, 4*k))
	flush(t, s)
	check("after a flush", s, 0, size, want...)
	check("a part", s, k+5, 5*k, data(k+5, k-5), hole(2*k, 3*k), data(5*k, k+5))

	count := 0
	fn := func(sources.Extent) bool { count++; return true }
	if n := testing.AllocsPerRun(50, func() { s.Extents(0, size, fn) }); n != 0 {
		t.Errorf("Extents allocates %v times per call, want 0", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The next writer knows the stored chunks from the listing; a reader
	// knows nothing before it reads.
	s2 := e.open(t, p, Options{})
	check("the next writer", s2, 0, size, want...)
	r := e.open(t, p, Options{ReadOnly: true})
	check("a reader", r, 0, size, data(0, size))
	if err := r.Extents(size, 1, fn); err == nil {
		t.Error("Extents past the end: no error")
	}
}
