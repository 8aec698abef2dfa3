package filters

import (
	"math/rand/v2"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// benchmarkRead4K reads 4 KiB at random aligned offsets of a 64 MiB memory
// source with data, through wrap, from all Ps at once: the access pattern
// of fio's 4 KiB random-read IOPS test.
func benchmarkRead4K(b *testing.B, wrap func(sources.Source) sources.Source) {
	const size = 64 << 20
	m, err := sources.NewMemory(size)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.WriteAt(testData(size, 1), 0); err != nil {
		b.Fatal(err)
	}
	src := wrap(m)
	defer src.Close()
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 0))
		p := make([]byte, 4096)
		for pb.Next() {
			if _, err := src.ReadAt(p, r.Int64N(size/4096)*4096); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMemoryRead4K is the baseline for BenchmarkErrorFilterIdle.
func BenchmarkMemoryRead4K(b *testing.B) {
	benchmarkRead4K(b, func(s sources.Source) sources.Source { return s })
}

// BenchmarkErrorFilterIdle is BenchmarkMemoryRead4K through an error
// filter whose trigger file does not exist, as in the RAID test before a
// disk is failed: the cost of an idle filter.
func BenchmarkErrorFilterIdle(b *testing.B) {
	path := b.TempDir() + "/trigger"
	benchmarkRead4K(b, func(s sources.Source) sources.Source {
		return NewError(s, ErrorOptions{Rate: 1, File: path}, Env{})
	})
}
