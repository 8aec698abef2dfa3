package nbd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/qcow2"
	"github.com/nbdloop/nbdloop/sources/vmdk"
)

// holeImage converts, with qemu-img, a 16 MiB raw file whose every 128 KiB
// is 64 KiB of data then 64 KiB of zeros into format (with qemu-img's
// options opts), so that the zeros are unallocated grains or clusters.
func holeImage(b *testing.B, format, opts string) string {
	b.Helper()
	tooltest.Require(b, "qemu-img")
	dir := b.TempDir()
	raw := filepath.Join(dir, "raw.img")
	data := make([]byte, 16<<20)
	for off := 0; off < len(data); off += 128 << 10 {
		for i := off; i < off+64<<10; i++ {
			data[i] = byte(i>>9) | 1
		}
	}
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		b.Fatal(err)
	}
	img := filepath.Join(dir, "img."+format)
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", format, "-o", opts, raw, img).CombinedOutput(); err != nil {
		b.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	return img
}

// benchmarkImageRead reads 128 KiB at a time, with structured replies,
// from an image made by holeImage: every READ asks the image's Extents
// and is answered with a data chunk and a hole chunk.
func benchmarkImageRead(b *testing.B, src sources.Source) {
	b.Helper()
	const n = 128 << 10
	var got []sources.Extent
	if err := sources.Extents(src, 0, n, func(e sources.Extent) bool { got = append(got, e); return true }); err != nil {
		b.Fatal(err)
	}
	want := []sources.Extent{{Off: 0, Length: n / 2}, {Off: n / 2, Length: n / 2, Kind: sources.ExtentHole}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		b.Fatalf("the image's first extents are %v, want %v", got, want)
	}
	benchmarkStructuredRead(b, src, n, dataChunkHeaderSize+n/2+ChunkHeaderSize+12)
}

// BenchmarkServerVMDKReadHoles128K reads a monolithicSparse VMDK whose
// every other grain is unallocated.
func BenchmarkServerVMDKReadHoles128K(b *testing.B) {
	d, err := vmdk.Open(holeImage(b, "vmdk", "subformat=monolithicSparse"), vmdk.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	benchmarkImageRead(b, d)
}

// BenchmarkServerQcow2ReadHoles128K reads a qcow2 image (64 KiB clusters)
// whose every other cluster is unallocated.
func BenchmarkServerQcow2ReadHoles128K(b *testing.B) {
	im, err := qcow2.Open(holeImage(b, "qcow2", "cluster_size=64k"), qcow2.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { im.Close() })
	benchmarkImageRead(b, im)
}
