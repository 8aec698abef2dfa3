package sources_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

const mib = 1 << 20

// sparseFile makes a file of size bytes with 0x5a bytes written at each
// [off, off+length) of data (the rest is holes, as truncate leaves them)
// in dir.
func sparseFile(t testing.TB, dir string, size int64, data [][2]int64) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("sparse-%d.img", len(data)))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, d := range data {
		b := make([]byte, d[1])
		for i := range b {
			b[i] = 0x5a
		}
		if _, err := f.WriteAt(b, d[0]); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func ext(off, length int64, k sources.ExtentKind) sources.Extent {
	return sources.Extent{Off: off, Length: length, Kind: k}
}

const (
	data = sources.ExtentData
	hole = sources.ExtentHole
)

func TestFileExtents(t *testing.T) {
	dirs := map[string]string{"disk": t.TempDir()}
	if _, err := os.Stat("/dev/shm"); err == nil {
		shm, err := os.MkdirTemp("/dev/shm", "nbdloop-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(shm) })
		dirs["tmpfs"] = shm
	}
	tests := []struct {
		name     string
		size     int64
		data     [][2]int64
		opts     sources.FileOptions
		off, len int64
		want     []sources.Extent
	}{
		{"all holes", 8 * mib, nil, sources.FileOptions{}, 0, 8 * mib,
			[]sources.Extent{ext(0, 8*mib, hole)}},
		{"data, hole, data, hole", 8 * mib, [][2]int64{{0, mib}, {3 * mib, 2 * mib}}, sources.FileOptions{}, 0, 8 * mib,
			[]sources.Extent{ext(0, mib, data), ext(mib, 2*mib, hole), ext(3*mib, 2*mib, data), ext(5*mib, 3*mib, hole)}},
		{"a range inside", 8 * mib, [][2]int64{{0, mib}, {3 * mib, 2 * mib}}, sources.FileOptions{}, mib / 2, 3 * mib,
			[]sources.Extent{ext(mib/2, mib/2, data), ext(mib, 2*mib, hole), ext(3*mib, mib/2, data)}},
		{"data to the end", 4 * mib, [][2]int64{{2 * mib, 2 * mib}}, sources.FileOptions{}, 0, 4 * mib,
			[]sources.Extent{ext(0, 2*mib, hole), ext(2*mib, 2*mib, data)}},
		{"a window", 8 * mib, [][2]int64{{3 * mib, 2 * mib}}, sources.FileOptions{Offset: 2 * mib, SizeLimit: 4 * mib}, 0, 4 * mib,
			[]sources.Extent{ext(0, mib, hole), ext(mib, 2*mib, data), ext(3*mib, mib, hole)}},
	}
	for fs, dir := range dirs {
		for _, tt := range tests {
			t.Run(fs+"/"+tt.name, func(t *testing.T) {
				f, err := sources.OpenFile(sparseFile(t, dir, tt.size, tt.data), tt.opts)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				got := sourcetest.Extents(t, f, tt.off, tt.len)
				if fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Errorf("extents %v, want %v", got, tt.want)
				}
			})
		}
	}
}

func TestMemoryExtents(t *testing.T) {
	m, err := sources.NewMemory(16 * mib)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range [][2]int64{{0, 100}, {5 * mib, mib}} {
		if _, err := m.WriteAt(make([]byte, w[1]), w[0]); err != nil {
			t.Fatal(err)
		}
		if _, err := m.WriteAt([]byte{1}, w[0]); err != nil {
			t.Fatal(err)
		}
	}
	got := sourcetest.Extents(t, m, 0, 16*mib)
	// Pages are 64 KiB: the first write allocates one; the second
	// allocates only its first page, the rest being zeros.
	want := []sources.Extent{ext(0, 64<<10, data), ext(64<<10, 5*mib-64<<10, hole), ext(5*mib, 64<<10, data), ext(5*mib+64<<10, 11*mib-64<<10, hole)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("extents %v, want %v", got, want)
	}
}

func TestComposedExtents(t *testing.T) {
	dir := t.TempDir()
	open := func(size int64, d [][2]int64) sources.Source {
		f, err := sources.OpenFile(sparseFile(t, dir, size, d), sources.FileOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a := open(4*mib, [][2]int64{{mib, mib}})
	w, err := sources.NewWindow(a, mib/2, 2*mib)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sourcetest.Extents(t, w, 0, 2*mib), []sources.Extent{ext(0, mib/2, hole), ext(mib/2, mib, data), ext(3*mib/2, mib/2, hole)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("window: extents %v, want %v", got, want)
	}
	rs, err := sources.NewRegions([]sources.Region{
		{Start: 0, Length: mib, Kind: sources.RegionData, Data: make([]byte, mib), Name: "table"},
		{Start: mib, Length: 4 * mib, Kind: sources.RegionSource, Source: a, Name: "a"},
		{Start: 5 * mib, Length: mib, Kind: sources.RegionZero, Name: "padding"},
		{Start: 6 * mib, Length: 2 * mib, Kind: sources.RegionSource, Source: a, Offset: mib, Name: "a again"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := sourcetest.Extents(t, rs, 0, 8*mib)
	want := []sources.Extent{ext(0, mib, data), ext(mib, mib, hole), ext(2*mib, mib, data), ext(3*mib, 3*mib, hole), ext(6*mib, mib, data), ext(7*mib, mib, hole)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("regions: extents %v, want %v", got, want)
	}
}

// TestFileExtentsAfterChanges: what Extents found stays true through the
// file's changes: a hole punched by Trim or Zero shows at once, as does
// data written into a hole (the run of data Extents remembers never
// hides a hole that Trim or Zero made).
func TestFileExtentsAfterChanges(t *testing.T) {
	f, err := sources.OpenFile(sparseFile(t, t.TempDir(), 4*mib, [][2]int64{{0, 2 * mib}}), sources.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	steps := []struct {
		name   string
		change func() error
		want   []sources.Extent
	}{
		{"as made", func() error { return nil }, []sources.Extent{ext(0, 2*mib, data), ext(2*mib, 2*mib, hole)}},
		{"trim inside the data", func() error { return f.Trim(mib/2, mib/2) },
			[]sources.Extent{ext(0, mib/2, data), ext(mib/2, mib/2, hole), ext(mib, mib, data), ext(2*mib, 2*mib, hole)}},
		{"write into the hole", func() error { _, err := f.WriteAt(make([]byte, 4096), mib/2); f.WriteAt([]byte{1}, mib/2); return err },
			[]sources.Extent{ext(0, mib/2+4096, data), ext(mib/2+4096, mib/2-4096, hole), ext(mib, mib, data), ext(2*mib, 2*mib, hole)}},
		{"zero, may trim", func() error { return f.Zero(0, mib/2, true) },
			[]sources.Extent{ext(0, mib/2, hole), ext(mib/2, 4096, data), ext(mib/2+4096, mib/2-4096, hole), ext(mib, mib, data), ext(2*mib, 2*mib, hole)}},
	}
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		// The first 2 MiB (the run of data the step before
		// remembered), then the whole file, which remembers a run.
		if got, want := sourcetest.Extents(t, f, 0, 2*mib), clip(s.want, 2*mib); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: extents of the first 2 MiB %v, want %v", s.name, got, want)
		}
		if got := sourcetest.Extents(t, f, 0, 4*mib); fmt.Sprint(got) != fmt.Sprint(s.want) {
			t.Errorf("%s: extents %v, want %v", s.name, got, s.want)
		}
		sourcetest.Extents(t, f, 0, 2*mib)
	}
}

// clip returns the extents up to end.
func clip(exts []sources.Extent, end int64) []sources.Extent {
	var out []sources.Extent
	for _, e := range exts {
		if e.Off < end {
			e.Length = min(e.Length, end-e.Off)
			out = append(out, e)
		}
	}
	return out
}
