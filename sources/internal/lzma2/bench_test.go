package lzma2

import (
	"bytes"
	"io"
	"os/exec"
	"sync"
	"testing"

	"github.com/ulikunitz/xz/lzma"
)

// The benchmark input: 16 MiB of a tar of /usr/lib (binaries and data,
// like a disk image), compressed as raw LZMA2 by xz at presets 3 and 6.
var benchIn struct {
	once sync.Once
	raw  []byte
	comp map[string][]byte
}

func benchInput(b *testing.B) {
	benchIn.once.Do(func() {
		out, err := exec.Command("/bin/sh", "-c", "tar cf - /usr/lib 2>/dev/null | head -c 16M").Output()
		if err != nil || len(out) < 16<<20 {
			out = binaries(16 << 20) // no tar: the files themselves
		}
		benchIn.raw = out
		benchIn.comp = map[string][]byte{}
		for _, p := range []string{"3", "6"} {
			benchIn.comp[p] = xzRaw(b, benchIn.raw, "preset="+p)
		}
	})
	if benchIn.comp["6"] == nil {
		b.Skip("no input: the xz tool is missing")
	}
}

// BenchmarkDecode decodes the same input with this package, with
// ulikunitz/xz's lzma.Reader2 and with xz -dc -T1 (liblzma, run as a
// process per iteration), one core each; MB/s is of output. Results:
// docs/performance.md, section lzma2.
func BenchmarkDecode(b *testing.B) {
	benchInput(b)
	dicts := map[string]int{"3": 4 << 20, "6": 8 << 20}
	for _, p := range []string{"3", "6"} {
		comp := benchIn.comp[p]
		b.Run("preset="+p+"/lzma2", func(b *testing.B) {
			b.SetBytes(int64(len(benchIn.raw)))
			z, err := NewReader(nil, dicts[p])
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, len(benchIn.raw))
			for b.Loop() {
				z.Reset(bytes.NewReader(comp), dicts[p])
				n, err := io.ReadFull(z, buf)
				if err != nil || n != len(buf) {
					b.Fatal(n, err)
				}
			}
			if !bytes.Equal(buf, benchIn.raw) {
				b.Fatal("wrong output")
			}
		})
		b.Run("preset="+p+"/ulikunitz", func(b *testing.B) {
			b.SetBytes(int64(len(benchIn.raw)))
			buf := make([]byte, len(benchIn.raw))
			for b.Loop() {
				r, err := lzma.Reader2Config{DictCap: dicts[p]}.NewReader2(bytes.NewReader(comp))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(r, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("preset="+p+"/xz", func(b *testing.B) {
			b.SetBytes(int64(len(benchIn.raw)))
			for b.Loop() {
				cmd := exec.Command("xz", "-dc", "-T1", "--format=raw", "--lzma2=preset="+p)
				cmd.Stdin = bytes.NewReader(comp)
				cmd.Stdout = io.Discard
				if err := cmd.Run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
