package qcow2

import (
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// benchImage makes a fully allocated 64 MiB image with 64 KiB clusters
// (qemu-img's default) and opens it.
func benchImage(b *testing.B, ro bool, args ...string) *Image {
	b.Helper()
	dir := b.TempDir()
	raw := filepath.Join(dir, "src.raw")
	data := make([]byte, 64<<20)
	r := rand.New(rand.NewPCG(1, 1))
	if len(args) > 0 && args[0] == "-c" {
		data = testData(len(data), 1) // compressible
	}
	for i := 0; i < len(data) && len(args) == 0; i += 8 {
		v := r.Uint64() | 1
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	writeFile(b, raw, data)
	img := filepath.Join(dir, "bench.qcow2")
	qemuImg(b, append(append([]string{"convert", "-O", "qcow2"}, args...), raw, img)...)
	im, err := Open(img, Options{ReadOnly: ro})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { im.Close() })
	return im
}

func benchRandom(b *testing.B, im *Image, size int, write bool) {
	p := make([]byte, size)
	r := rand.New(rand.NewPCG(2, 2))
	n := im.Size() / int64(size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		off := r.Int64N(n) * int64(size)
		var err error
		if write {
			_, err = im.WriteAt(p, off)
		} else {
			_, err = im.ReadAt(p, off)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadAt4K: random 4 KiB reads of allocated clusters (the page
// cache serves the file, so this measures the mapping overhead).
func BenchmarkReadAt4K(b *testing.B) { benchRandom(b, benchImage(b, true), 4096, false) }

// BenchmarkWriteAt4K: random 4 KiB in-place writes.
func BenchmarkWriteAt4K(b *testing.B) { benchRandom(b, benchImage(b, false), 4096, true) }

// BenchmarkReadAt1M: 1 MiB reads, each one coalesced pread.
func BenchmarkReadAt1M(b *testing.B) { benchRandom(b, benchImage(b, true), 1<<20, false) }

// BenchmarkReadAt4KParallel: random 4 KiB reads from all cores.
func BenchmarkReadAt4KParallel(b *testing.B) {
	im := benchImage(b, true)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, 4096)
		r := rand.New(rand.NewPCG(rand.Uint64(), 3))
		n := im.Size() / 4096
		for pb.Next() {
			if _, err := im.ReadAt(p, r.Int64N(n)*4096); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkWriteAt1MAllocating: sequential 1 MiB writes into an empty
// image: allocation, refcounts and L2 updates on every cluster.
func BenchmarkWriteAt1MAllocating(b *testing.B) {
	dir := b.TempDir()
	img := filepath.Join(dir, "empty.qcow2")
	qemuImg(b, "create", "-q", "-f", "qcow2", img, "1T")
	im, err := Open(img, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer im.Close()
	p := make([]byte, 1<<20)
	for i := range p {
		p[i] = byte(i) | 1
	}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		if _, err := im.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
		off += int64(len(p))
	}
}

// BenchmarkWriteAt1MAllocatingQD8 is the load of fio's write-1m-qd8
// through the kernel NBD device: 8 writers take the next 1 MiB chunk of a
// fresh image in turn (so the requests are roughly sequential but run
// concurrently, in any order). The final Flush is not timed: it measures
// the disk.
func BenchmarkWriteAt1MAllocatingQD8(b *testing.B) {
	img := filepath.Join(b.TempDir(), "empty.qcow2")
	qemuImg(b, "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", img, "1T")
	im, err := Open(img, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer im.Close()
	const size, depth = 1 << 20, 8
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range depth {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, size)
			for i := range p {
				p[i] = byte(i+w) | 1
			}
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if _, err := im.WriteAt(p, i*size); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err := im.Flush(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkReadCompressed64K: sequential 64 KiB reads of a zlib image.
func BenchmarkReadCompressed64K(b *testing.B) {
	im := benchImage(b, true, "-c")
	p := make([]byte, 64<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		if _, err := im.ReadAt(p, off); err != nil {
			b.Fatal(err)
		}
		off = (off + int64(len(p))) % im.Size()
	}
}
