package qcow2

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// mapRun is one run of qemu-img map's answer as NBD's base:allocation
// tells it: whether the bytes are data, whether they read as zeros.
type mapRun struct {
	Start, Length int64
	Data, Zero    bool
}

// qemuMap runs qemu-img map --output=json on img and returns its runs,
// neighbours that say the same merged.
func qemuMap(t *testing.T, img string) []mapRun {
	t.Helper()
	var raw []mapRun
	if err := json.Unmarshal([]byte(qemuImg(t, "map", "--output=json", img)), &raw); err != nil {
		t.Fatal(err)
	}
	var out []mapRun
	for _, r := range raw {
		out = appendRun(out, r)
	}
	return out
}

func appendRun(runs []mapRun, r mapRun) []mapRun {
	if n := len(runs); n > 0 && runs[n-1].Data == r.Data && runs[n-1].Zero == r.Zero {
		runs[n-1].Length += r.Length
		return runs
	}
	return append(runs, r)
}

// TestExtentsMatchQemuImgMap: the extents of every fixture (plain,
// compressed, v2, chains with zero clusters, discards and extended L2
// entries) say what qemu-img map says of the image: data where it has
// data, holes where it reads zeros without data.
func TestExtentsMatchQemuImgMap(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			t.Parallel()
			img, _ := fx.build(t, t.TempDir())
			im, err := Open(img, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			var got []mapRun
			for _, e := range sourcetest.Extents(t, im, 0, im.Size()) {
				got = appendRun(got, mapRun{Start: e.Off, Length: e.Length, Data: e.Kind == sources.ExtentData, Zero: e.Kind != sources.ExtentData})
			}
			if want := qemuMap(t, img); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("extents\n%v\nqemu-img map\n%v", got, want)
			}
			// A range that starts and ends inside clusters.
			sourcetest.Extents(t, im, 1000, im.Size()-3000)
		})
	}
}
