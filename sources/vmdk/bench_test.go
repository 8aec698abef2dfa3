package vmdk

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// benchDisk converts a 128 MiB raw file of random data (every grain
// allocated) to subformat opts and opens it.
func benchDisk(b *testing.B, opts string) *Disk {
	b.Helper()
	dir := b.TempDir()
	raw := filepath.Join(dir, "raw.img")
	buf := make([]byte, 128<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(buf); i += 8 {
		v := r.Uint64()
		for k := range 8 {
			buf[i+k] = byte(v >> (8 * k))
		}
	}
	if err := os.WriteFile(raw, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	return mustOpen(b, convert(b, raw, dir, opts), Options{})
}

func benchRead(b *testing.B, d *Disk, size int, random bool) {
	p := make([]byte, size)
	r := rand.New(rand.NewPCG(3, 4))
	var off int64
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if random {
			off = r.Int64N(d.Size()/int64(size)) * int64(size)
		} else if off+int64(size) > d.Size() {
			off = 0
		}
		if _, err := d.ReadAt(p, off); err != nil {
			b.Fatal(err)
		}
		off += int64(size)
	}
}

// BenchmarkReadRandom4K reads 4 KiB at random aligned offsets of a fully
// allocated monolithicSparse disk: a grain table lookup per read, no
// allocation.
func BenchmarkReadRandom4K(b *testing.B) {
	benchRead(b, benchDisk(b, "subformat=monolithicSparse"), 4096, true)
}

// BenchmarkReadSequential1M reads 1 MiB requests in order: 16 contiguous
// grains coalesced into one pread.
func BenchmarkReadSequential1M(b *testing.B) {
	benchRead(b, benchDisk(b, "subformat=monolithicSparse"), 1<<20, false)
}

// BenchmarkReadStream64K reads whole grains of a streamOptimized disk:
// one inflate each.
func BenchmarkReadStream64K(b *testing.B) {
	benchRead(b, benchDisk(b, "subformat=streamOptimized"), 64<<10, false)
}

// BenchmarkWriteRandom4K writes 4 KiB at random offsets of an allocated
// disk, in place, in parallel.
func BenchmarkWriteRandom4K(b *testing.B) {
	d := benchDisk(b, "subformat=monolithicSparse")
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, 4096)
		r := rand.New(rand.NewPCG(5, 6))
		for pb.Next() {
			if _, err := d.WriteAt(p, r.Int64N(d.Size()/4096)*4096); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
