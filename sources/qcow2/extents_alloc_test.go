package qcow2

import (
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// allocFixtures are the fixtures whose extents go through every branch of
// Extents: allocated, unallocated and zero clusters, subclusters, v2 and
// v3, and backing chains (qcow2 over qcow2 over raw).
var allocFixtures = []string{"chain-v3", "chain-v2", "chain-extl2", "extl2-128k"}

// openAllocFixtures opens allocFixtures, read-only.
func openAllocFixtures(t testing.TB) []*Image {
	t.Helper()
	var ims []*Image
	for _, name := range allocFixtures {
		for _, fx := range fixtures {
			if fx.name != name {
				continue
			}
			img, _ := fx.build(t, t.TempDir())
			im, err := Open(img, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { im.Close() })
			ims = append(ims, im)
		}
	}
	if len(ims) != len(allocFixtures) {
		t.Fatalf("found %d of the fixtures %v", len(ims), allocFixtures)
	}
	return ims
}

// TestExtentsAllocateNothing: Extents, which the server asks on every
// READ it splits into data and holes, allocates nothing once warm, over
// the whole image and over a range inside, for every kind of cluster and
// through backing chains.
func TestExtentsAllocateNothing(t *testing.T) {
	for i, im := range openAllocFixtures(t) {
		t.Run(allocFixtures[i], func(t *testing.T) {
			count := 0
			fn := func(sources.Extent) bool { count++; return true }
			for _, r := range [][2]int64{{0, im.Size()}, {2<<20 - 4096, 128 << 10}} {
				walk := func() {
					if err := im.Extents(r[0], r[1], fn); err != nil {
						t.Fatal(err)
					}
				}
				count = 0
				walk()
				if r[0] == 0 && count < 2 {
					t.Fatalf("%d extents over the whole image: the fixture has no holes", count)
				}
				if n := testing.AllocsPerRun(50, walk); n != 0 {
					t.Errorf("Extents(%d, %d) allocates %v times per call, want 0", r[0], r[1], n)
				}
			}
		})
	}
}

// BenchmarkExtents asks the extents of 64 KiB ranges at scattered
// offsets, the size of a READ the server splits into data and holes.
func BenchmarkExtents(b *testing.B) {
	for i, im := range openAllocFixtures(b) {
		b.Run(allocFixtures[i], func(b *testing.B) {
			fn := func(sources.Extent) bool { return true }
			const n = 64 << 10
			slots := im.Size() / n
			b.ReportAllocs()
			k := int64(0)
			for b.Loop() {
				k = (k*7919 + 1) % slots
				if err := im.Extents(k*n, n, fn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
