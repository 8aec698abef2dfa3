package vmdk

import (
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

type namedDisk struct {
	name string
	d    *Disk
}

// allocCases opens, read-only, disks made by qemu-img whose extents mix
// data and holes: sparse (plain, zeroed grains, stream-optimized), flat
// (a sparse file underneath) and a delta disk over a sparse parent.
func allocCases(t testing.TB) []namedDisk {
	t.Helper()
	var disks []namedDisk
	for _, sf := range subformats {
		if sf.size > 64<<20 {
			continue // the two-extent layouts: the same code, 2 GiB files
		}
		dir := t.TempDir()
		disks = append(disks, namedDisk{sf.name, mustOpen(t, convert(t, rawImage(t, dir, sf.size, 9), dir, sf.opts), Options{ReadOnly: true})})
	}
	disks = append(disks, namedDisk{"delta", mustOpen(t, delta(t, t.TempDir(), 32<<20), Options{ReadOnly: true})})
	return disks
}

// TestExtentsAllocateNothing: Extents, which the server asks on every
// READ it splits into data and holes, allocates nothing once warm, over
// the whole disk and over a 64 KiB range inside, for every layout.
func TestExtentsAllocateNothing(t *testing.T) {
	for _, c := range allocCases(t) {
		d := c.d
		t.Run(c.name, func(t *testing.T) {
			count := 0
			fn := func(sources.Extent) bool { count++; return true }
			for _, r := range [][2]int64{{0, d.Size()}, {1<<20 + 4096, 64 << 10}} {
				walk := func() {
					if err := d.Extents(r[0], r[1], fn); err != nil {
						t.Fatal(err)
					}
				}
				count = 0
				walk()
				if r[0] == 0 && count < 2 {
					t.Fatalf("%d extents over the whole disk: the fixture has no holes", count)
				}
				if n := testing.AllocsPerRun(50, walk); n != 0 {
					t.Errorf("Extents(%d, %d) allocates %v times per call, want 0", r[0], r[1], n)
				}
			}
		})
	}
}

// BenchmarkExtents asks the extents of 64 KiB ranges at random grain
// offsets, the size of a READ the server splits into data and holes.
func BenchmarkExtents(b *testing.B) {
	for _, c := range allocCases(b) {
		d := c.d
		b.Run(c.name, func(b *testing.B) {
			fn := func(sources.Extent) bool { return true }
			const n = 64 << 10
			slots := d.Size() / n
			b.ReportAllocs()
			i := int64(0)
			for b.Loop() {
				i = (i*7919 + 1) % slots
				if err := d.Extents(i*n, n, fn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
