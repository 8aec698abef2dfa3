package filters

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// sparseMemory is a 1 MiB Memory with data in its first 64 KiB page and
// in the page at 512 KiB, holes elsewhere.
func sparseMemory(t *testing.T) *sources.Memory {
	t.Helper()
	m := newMemoryWith(t, make([]byte, 1<<20))
	for _, off := range []int64{0, 512 << 10} {
		if _, err := m.WriteAt([]byte{1}, off); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func extentList(es ...any) string {
	var out []sources.Extent
	for i := 0; i < len(es); i += 3 {
		out = append(out, sources.Extent{Off: int64(es[i].(int)), Length: int64(es[i+1].(int)), Kind: es[i+2].(sources.ExtentKind)})
	}
	return fmt.Sprint(out)
}

const (
	kData = sources.ExtentData
	kHole = sources.ExtentHole
)

// TestFiltersPassExtents: every filter reports the extents of the source
// it wraps (none changes where the bytes are until written to).
func TestFiltersPassExtents(t *testing.T) {
	specs := map[string]string{
		"cow": "cow", "delay": "delay:read=1", "error": "error:rate=0", "log": "log:file=LOG",
		"protect": "protect:range=0-4K", "readonly": "readonly", "rate": "rate:limit=1M", "stats": "stats",
	}
	want := extentList(0, 64<<10, kData, 64<<10, 448<<10, kHole, 512<<10, 64<<10, kData, 576<<10, 448<<10, kHole)
	for _, d := range Table {
		spec, ok := specs[d.Name]
		if !ok {
			t.Errorf("filter %s: no spec in this test; say how it reports extents", d.Name)
			continue
		}
		t.Run(d.Name, func(t *testing.T) {
			if spec == "log:file=LOG" {
				spec = "log:file=" + filepath.Join(t.TempDir(), "log")
			}
			st, err := Open(sparseMemory(t), parseAll(t, spec), Env{Clock: newFakeClock()})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Source.Close()
			if _, ok := st.Source.(sources.Extenter); !ok {
				t.Fatalf("%T does not pass extents on (sources.Extenter)", st.Source)
			}
			if got := fmt.Sprint(sourcetest.Extents(t, st.Source, 0, 1<<20)); got != want {
				t.Errorf("extents %s, want %s", got, want)
			}
			extentsAllocNothing(t, st.Source, 0, 1<<20)
		})
	}
}

// TestCowExtents: blocks written through cow are the overlay's (data, or
// a hole where a block was zeroed), the others next's.
func TestCowExtents(t *testing.T) {
	st, err := Open(sparseMemory(t), parseAll(t, "cow"), Env{})
	if err != nil {
		t.Fatal(err)
	}
	c := st.Source
	defer c.Close()
	if _, err := c.WriteAt([]byte{7}, 256<<10); err != nil {
		t.Fatal(err)
	}
	if err := c.Zero(512<<10, 4096, true); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(sourcetest.Extents(t, c, 0, 1<<20))
	want := extentList(0, 64<<10, kData, 64<<10, 192<<10, kHole, 256<<10, 4096, kData,
		260<<10, 256<<10, kHole, 516<<10, 60<<10, kData, 576<<10, 448<<10, kHole)
	if got != want {
		t.Errorf("extents %s, want %s", got, want)
	}
	extentsAllocNothing(t, c, 0, 1<<20)
}

// extentsAllocNothing checks that src's Extents over [off, off+n), which
// the server asks on every READ it splits into data and holes, allocates
// nothing once warm.
func extentsAllocNothing(t *testing.T, src sources.Source, off, n int64) {
	t.Helper()
	fn := func(sources.Extent) bool { return true }
	allocs := testing.AllocsPerRun(50, func() {
		if err := sources.Extents(src, off, n, fn); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Extents allocates %v times per call, want 0", allocs)
	}
}
