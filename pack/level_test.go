package pack

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
)

// sourceText is about n bytes of Go source from the toolchain that runs the
// test: text-like data, where the dictionary size matters.
func sourceText(t *testing.T, n int) []byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(runtime.GOROOT(), "src", "*", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go sources in %s: %v", runtime.GOROOT(), err)
	}
	sort.Strings(files)
	var b bytes.Buffer
	for _, f := range files {
		if b.Len() >= n {
			break
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	if b.Len() < n {
		t.Fatalf("only %d bytes of Go sources, want %d", b.Len(), n)
	}
	return b.Bytes()[:n]
}

// TestXZLevels holds the documented meaning of xz's --level: it picks the
// dictionary size of xz's preset, capped at the block size, and nothing
// else. A higher level is never larger; levels whose dictionaries are
// capped to the same size give the same bytes; a larger dictionary helps
// on text.
func TestXZLevels(t *testing.T) {
	data := sourceText(t, 3<<20)
	tests := []struct {
		name      string
		blockSize int64
		levels    []int
		same      bool // all the same output; else strictly smaller with each level
	}{
		{name: "dictionaries under the block size", blockSize: 3 << 20, levels: []int{0, 1, 2}},
		{name: "dictionaries capped at the block size", blockSize: 1 << 20, levels: []int{1, 3, 6, 9}, same: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prev []byte
			for i, lvl := range tt.levels {
				out, _ := pack(t, data, Options{Format: XZ, BlockSize: tt.blockSize, Level: lvl})
				t.Logf("level %d: %d bytes", lvl, len(out))
				switch {
				case i == 0:
				case tt.same && !bytes.Equal(out, prev):
					t.Errorf("level %d: %d bytes, differs from level %d's %d", lvl, len(out), tt.levels[i-1], len(prev))
				case !tt.same && len(out) >= len(prev):
					t.Errorf("level %d: %d bytes, not smaller than level %d's %d", lvl, len(out), tt.levels[i-1], len(prev))
				}
				prev = out
			}
		})
	}
}
