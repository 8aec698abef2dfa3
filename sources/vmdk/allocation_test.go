package vmdk

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// qemuKinds runs qemu-img map on the image and returns its runs as
// "start+length:kind" words, neighbours of a kind merged: data where qemu
// says data and not zero; zero for allocated zeros (a zeroed grain); hole
// for unallocated ranges and for the holes of a flat extent's file
// (qemu: data and zero).
func qemuKinds(t *testing.T, img string) string {
	t.Helper()
	var runs []struct {
		Start, Length       int64
		Present, Zero, Data bool
	}
	if err := json.Unmarshal([]byte(qemuImg(t, "map", "--output=json", "-f", "vmdk", img)), &runs); err != nil {
		t.Fatal(err)
	}
	var exts []sources.Extent
	for _, r := range runs {
		k := sources.ExtentData
		switch {
		case r.Zero && (!r.Present || r.Data):
			k = sources.ExtentHole
		case r.Zero:
			k = sources.ExtentZero
		}
		exts = append(exts, sources.Extent{Off: r.Start, Length: r.Length, Kind: k})
	}
	return words(exts)
}

// words describes extents as "start+length:kind", neighbours of a kind
// merged.
func words(exts []sources.Extent) string {
	var w []string
	var last sources.Extent
	for i, e := range exts {
		if i > 0 && e.Kind == last.Kind {
			last.Length += e.Length
		} else {
			if i > 0 {
				w = append(w, fmt.Sprintf("%d+%d:%s", last.Off, last.Length, last.Kind))
			}
			last = e
		}
	}
	return strings.Join(append(w, fmt.Sprintf("%d+%d:%s", last.Off, last.Length, last.Kind)), " ")
}

// TestExtentsMatchQemu: the disk's extents, for every subformat and a
// delta disk, are those qemu-img map reports (zeroed grains told from
// unallocated ones), the holes and zeros read as zeros, and a range
// inside reports the same as the whole, cut.
func TestExtentsMatchQemu(t *testing.T) {
	type fixture struct {
		name string
		make func(t *testing.T, dir string) (img string, size int64)
		must []string // words the map must have: the fixture's own layout
	}
	fixtures := []fixture{{
		name: "delta disk",
		make: func(t *testing.T, dir string) (string, int64) { return delta(t, dir, 32<<20), 32 << 20 },
	}, {
		name: "zeroed grains",
		make: func(t *testing.T, dir string) (string, int64) {
			img := filepath.Join(dir, "z.vmdk")
			qemuImg(t, "create", "-f", "vmdk", "-o", "zeroed_grain=on", img, "8M")
			qemuIO(t, img, "write -P 0x5a 1M 1M", "write -z 1536k 64k", "write -z 3M 128k", "write -P 0xa5 5M 512k")
			return img, 8 << 20
		},
		must: []string{"0+1048576:hole", "1048576+524288:data", "1572864+65536:zero", "1638400+458752:data", "3145728+131072:zero", "5242880+524288:data"},
	}}
	for _, sf := range subformats {
		fixtures = append(fixtures, fixture{name: sf.name, make: func(t *testing.T, dir string) (string, int64) {
			return convert(t, rawImage(t, dir, sf.size, 9), dir, sf.opts), sf.size
		}})
	}
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			img, size := f.make(t, t.TempDir())
			want := qemuKinds(t, img)
			for _, w := range f.must {
				if !strings.Contains(want, w) {
					t.Fatalf("the fixture: qemu-img map shows %s, without %s", want, w)
				}
			}
			d := mustOpen(t, img, Options{ReadOnly: true})
			if got := words(sourcetest.Extents(t, d, 0, size)); got != want {
				t.Errorf("Extents:\n%s\nqemu-img map:\n%s", got, want)
			}
			// A range inside, off the grains: the same, cut.
			off, n := int64(1<<20+4096+512), size/2
			sourcetest.Extents(t, d, off, n)
		})
	}
}
