package sources_test

import (
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// extentCase is a Source and a range of it that holds data and holes, for
// the allocation test and benchmark of Extents.
type extentCase struct {
	name   string
	src    sources.Source
	off, n int64
	mixed  bool // the range holds data and holes
}

// extentCases makes a sparse file (data at 1 MiB and at 3 MiB, 512 KiB
// each) and the Sources that report extents over it or by themselves.
func extentCases(t testing.TB) []extentCase {
	t.Helper()
	dir := t.TempDir()
	f, err := sources.OpenFile(sparseFile(t, dir, 4*mib, [][2]int64{{mib, mib / 2}, {3 * mib, mib / 2}}), sources.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err := sources.NewMemory(4 * mib)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WriteAt([]byte{1}, mib); err != nil {
		t.Fatal(err)
	}
	w, err := sources.NewWindow(f, mib/2, 3*mib)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sources.NewConcat([]sources.Source{f, w}, sources.ConcatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := sources.NewRegions([]sources.Region{
		{Start: 0, Length: mib, Kind: sources.RegionData, Data: make([]byte, mib), Name: "table"},
		{Start: mib, Length: 4 * mib, Kind: sources.RegionSource, Source: f, Name: "file"},
		{Start: 5 * mib, Length: mib, Kind: sources.RegionZero, Name: "padding"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return []extentCase{
		{"file", f, mib - 4096, mib, true},
		{"file in a hole", f, 2 * mib, 16 << 10, false},
		{"file in data", f, mib + 4096, 16 << 10, false},
		{"memory", m, mib - 4096, mib, true},
		{"window", w, mib/2 - 4096, mib, true},
		{"concat", c, 3*mib + 4096, 2 * mib, true},
		{"regions", rs, mib - 4096, 3 * mib, true},
	}
}

// TestExtentsAllocateNothing: Extents, which the server asks on every
// READ it splits into data and holes, allocates nothing once warm, for
// each Source that reports extents (a file asking the filesystem or
// answering from the data it found, and the Sources built over one).
func TestExtentsAllocateNothing(t *testing.T) {
	for _, tc := range extentCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			count := 0
			fn := func(sources.Extent) bool { count++; return true }
			walk := func() {
				if err := sources.Extents(tc.src, tc.off, tc.n, fn); err != nil {
					t.Fatal(err)
				}
			}
			walk()
			if tc.mixed && count < 2 {
				t.Fatalf("%d extents over [%d, +%d): the case has no holes", count, tc.off, tc.n)
			}
			if n := testing.AllocsPerRun(100, walk); n != 0 {
				t.Errorf("Extents allocates %v times per call, want 0", n)
			}
		})
	}
}

// BenchmarkExtents asks each Source's extents over its case's range.
func BenchmarkExtents(b *testing.B) {
	for _, tc := range extentCases(b) {
		b.Run(tc.name, func(b *testing.B) {
			fn := func(sources.Extent) bool { return true }
			b.ReportAllocs()
			for b.Loop() {
				if err := sources.Extents(tc.src, tc.off, tc.n, fn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
