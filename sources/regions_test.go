package sources_test

import (
	"bytes"
	"errors"
	"slices"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// tableDisk lays out a tiny "disk": 512 bytes of table data, a partition
// from part a, 512 bytes of padding, a partition from part b, and a
// trailing copy of the table, like a GPT disk.
func tableDisk(t testing.TB, a, b sources.Source) (*sources.Regions, []byte) {
	t.Helper()
	table := randomBytes(512, 42)
	var l sources.Layout
	l.AddData("partition table", table)
	l.AddSource("a.img", a, a.Size())
	l.AddZero("padding", 512)
	l.AddSource("b.img", b, b.Size())
	l.AddData("backup partition table", table)
	rs, err := sources.NewRegions(l.Regions())
	if err != nil {
		t.Fatal(err)
	}
	return rs, table
}

// TestRegionsFind checks the binary search on every boundary.
func TestRegionsFind(t *testing.T) {
	a, b := newMemory(t, 1024), newMemory(t, 4096)
	rs, _ := tableDisk(t, a, b)
	tests := []struct {
		off  int64
		want int
	}{
		{-1, -1}, {0, 0}, {511, 0}, {512, 1}, {1535, 1}, {1536, 2}, {2047, 2},
		{2048, 3}, {6143, 3}, {6144, 4}, {6655, 4}, {6656, -1},
	}
	for _, tt := range tests {
		if got := rs.Find(tt.off); got != tt.want {
			t.Errorf("Find(%d) = %d, want %d", tt.off, got, tt.want)
		}
	}
	if rs.Size() != 6656 {
		t.Errorf("Size() = %d, want 6656", rs.Size())
	}
}

// TestRegionsSourceConformance runs the conformance suite on the parts of
// a table disk that are files, through a Window each, so that the writes
// the suite makes land in Sources.
func TestRegionsSourceConformance(t *testing.T) {
	for _, part := range []struct {
		name        string
		off, length int64
	}{{"a", 512, 64 << 10}, {"b", 512 + 64<<10 + 512, 12345}} {
		t.Run(part.name, func(t *testing.T) {
			var want []byte
			open := func(t *testing.T) sources.Source {
				parts, _ := memoryParts(t, []int{64 << 10, 12345})
				rs, _ := tableDisk(t, parts[0], parts[1])
				w, err := sources.NewWindow(rs, part.off, part.length)
				if err != nil {
					t.Fatal(err)
				}
				return w
			}
			_, all := memoryParts(t, []int{64 << 10, 12345})
			if part.name == "a" {
				want = all[:64<<10]
			} else {
				want = all[64<<10:]
			}
			sourcetest.Run(t, open, want)
		})
	}
}

// TestRegionsReadOnlyConformance: with every Source read-only the whole is
// read-only, tables included.
func TestRegionsReadOnlyConformance(t *testing.T) {
	_, data := memoryParts(t, []int{4096, 1000})
	var want []byte
	open := func(t *testing.T) sources.Source {
		parts, _ := memoryParts(t, []int{4096, 1000})
		rs, table := tableDisk(t, readOnly{parts[0]}, readOnly{parts[1]})
		want = slices.Concat(table, data[:4096], make([]byte, 512), data[4096:], table)
		return rs
	}
	open(t).Close()
	sourcetest.Run(t, open, want)
}

func TestRegionsTableWrites(t *testing.T) {
	a, b := newMemory(t, 1024), newMemory(t, 1024)
	rs, table := tableDisk(t, a, b)
	defer rs.Close()
	snapshot := func() []byte {
		p := make([]byte, rs.Size())
		if _, err := rs.ReadAt(p, 0); err != nil {
			t.Fatal(err)
		}
		return p
	}
	changed := slices.Clone(table)
	changed[100] ^= 1
	tests := []struct {
		name string
		op   func() error
		want error // nil: succeeds
	}{
		{name: "table rewritten unchanged", op: func() error { _, err := rs.WriteAt(table, 0); return err }},
		{name: "table and partition", op: func() error {
			_, err := rs.WriteAt(append(slices.Clone(table[256:]), 1, 2, 3), 256)
			return err
		}},
		{name: "changed table", want: sources.ErrRegionWrite, op: func() error { _, err := rs.WriteAt(changed, 0); return err }},
		{name: "partition then changed backup table", want: sources.ErrRegionWrite, op: func() error {
			p := append(bytes.Repeat([]byte{9}, 1024), changed...)
			_, err := rs.WriteAt(p, 512+1024+512)
			return err
		}},
		{name: "data into padding", want: sources.ErrRegionWrite, op: func() error {
			_, err := rs.WriteAt([]byte{1, 2, 3}, 1536+10)
			return err
		}},
		{name: "zeros into padding", op: func() error { _, err := rs.WriteAt(make([]byte, 512), 1536); return err }},
		{name: "zero over the table", want: sources.ErrRegionWrite, op: func() error { return rs.Zero(0, 1024, true) }},
		{name: "zero over padding", op: func() error { return rs.Zero(1536, 1024, true) }},
		{name: "trim over everything", op: func() error { return rs.Trim(0, rs.Size()) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot()
			err := tt.op()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("= %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("= %v, want %v (EIO)", err, tt.want)
			}
			// A refused request changes nothing, not even the parts
			// that are files.
			if !bytes.Equal(before, snapshot()) {
				t.Errorf("a refused request changed the disk")
			}
		})
	}
	// The table reads back as it was.
	got := make([]byte, 512)
	rs.ReadAt(got, 0)
	if !bytes.Equal(got, table) {
		t.Errorf("the table changed")
	}
}

// TestRegionsPartlyReadOnly: writes that reach a read-only Source fail with
// EPERM before anything is written; the other Sources stay writable.
func TestRegionsPartlyReadOnly(t *testing.T) {
	a, b := newMemory(t, 1024), newMemory(t, 1024)
	rs, _ := tableDisk(t, a, readOnly{b})
	defer rs.Close()
	if rs.Caps().ReadOnly {
		t.Fatal("Caps().ReadOnly = true with one writable part")
	}
	if _, err := rs.WriteAt([]byte{1}, 512); err != nil {
		t.Errorf("WriteAt(a) = %v, want nil", err)
	}
	// From a through the padding into b.
	p := make([]byte, 2048)
	p[0] = 5
	_, err := rs.WriteAt(p, 1024)
	if !errors.Is(err, sources.ErrReadOnly) || !errors.Is(err, syscall.EPERM) {
		t.Errorf("WriteAt(a..b) = %v, want ErrReadOnly (EPERM)", err)
	}
	got := make([]byte, 1)
	a.ReadAt(got, 512)
	if got[0] != 0 {
		t.Errorf("the refused write reached a.img")
	}
	for name, err := range map[string]error{
		"Zero": rs.Zero(2048, 10, false),
		"Trim": rs.Trim(2048, 10),
	} {
		if !errors.Is(err, sources.ErrReadOnly) {
			t.Errorf("%s(b) = %v, want ErrReadOnly", name, err)
		}
	}
}

// TestRegionsFlushesDirtyOnly: Flush reaches the Sources written since the
// last flush, and each once.
func TestRegionsFlushesDirtyOnly(t *testing.T) {
	a := &recorder{size: 1024, caps: sources.Caps{Flush: true}}
	b := &recorder{size: 1024, caps: sources.Caps{Flush: true}}
	rs, _ := tableDisk(t, a, b)
	if !rs.Caps().Flush || rs.Caps().Parallel {
		t.Errorf("Caps() = %v, want flush and not parallel", rs.Caps())
	}
	rs.Flush()
	rs.WriteAt([]byte{1, 2}, 600)
	rs.Zero(512+1024+512, 10, false)
	rs.Flush()
	rs.WriteAt([]byte{1, 2}, 2100)
	rs.Flush()
	rs.Flush()
	rs.Close()
	if want := []string{"write 88 2", "flush", "close"}; !slices.Equal(a.calls, want) {
		t.Errorf("a: calls = %q, want %q", a.calls, want)
	}
	if want := []string{"zero 0 10 false", "flush", "write 52 2", "flush", "close"}; !slices.Equal(b.calls, want) {
		t.Errorf("b: calls = %q, want %q", b.calls, want)
	}
}

func TestNewRegionsErrors(t *testing.T) {
	m := newMemory(t, 1024)
	tests := []struct {
		name    string
		regions []sources.Region
		want    error
	}{
		{name: "none", want: sources.ErrEmpty},
		{name: "gap", want: syscall.EINVAL, regions: []sources.Region{
			{Start: 0, Length: 10, Kind: sources.RegionZero},
			{Start: 11, Length: 10, Kind: sources.RegionZero},
		}},
		{name: "empty region", want: sources.ErrEmpty, regions: []sources.Region{{Start: 0, Length: 0, Kind: sources.RegionZero}}},
		{name: "short data", want: syscall.EINVAL, regions: []sources.Region{{Start: 0, Length: 10, Kind: sources.RegionData, Data: []byte{1}}}},
		{name: "source too small", want: sources.ErrRange, regions: []sources.Region{{Start: 0, Length: 1000, Kind: sources.RegionSource, Source: m, Offset: 100}}},
		{name: "no source", want: syscall.EINVAL, regions: []sources.Region{{Start: 0, Length: 10, Kind: sources.RegionSource}}},
		{name: "past 2^63-1", want: syscall.EFBIG, regions: []sources.Region{
			{Start: 0, Length: 1 << 62, Kind: sources.RegionZero},
			{Start: 1 << 62, Length: 1 << 62, Kind: sources.RegionZero},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := sources.NewRegions(tt.regions); !errors.Is(err, tt.want) {
				t.Errorf("NewRegions = %v, want %v", err, tt.want)
			}
		})
	}
}
