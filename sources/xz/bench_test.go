package xz

import (
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// The benchmark image: 64 MiB of binaries (a tar of /usr/bin and
// /usr/lib, as formats.md measured), compressed as xz -T2
// --block-size=4MiB, made once per test binary in a temporary directory.
var bench struct {
	once sync.Once
	file *os.File
	size int64
	raw  int64
	err  error
}

// benchImage returns the image as a ReaderAt that Close does not close.
func benchImage(b *testing.B) (io.ReaderAt, int64) {
	tooltest.Require(b, "xz")
	bench.once.Do(func() {
		dir, err := os.MkdirTemp("", "xzbench")
		if err != nil {
			bench.err = err
			return
		}
		path := filepath.Join(dir, "bench.img.xz")
		cmd := exec.Command("/bin/sh", "-c", `tar cf - /usr/lib/x86_64-linux-gnu /usr/bin 2>/dev/null | head -c 64M | xz -T2 --block-size=4MiB > "$0"`, path)
		if out, err := cmd.CombinedOutput(); err != nil {
			bench.err = err
			b.Logf("%s", out)
			return
		}
		bench.file, bench.err = os.Open(path)
		if bench.err == nil {
			fi, _ := bench.file.Stat()
			bench.size = fi.Size()
			os.RemoveAll(dir) // the open file stays readable
		}
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return io.NewSectionReader(bench.file, 0, bench.size), bench.size
}

// BenchmarkXZRandomRead4K: random 4 KiB reads from 8 goroutines (like the
// kernel's queue over several connections). With a 16 MiB cache most reads
// of the 64 MiB image miss and decode a 4 MiB block; with the default
// cache the image is read whole first, so every read hits.
func BenchmarkXZRandomRead4K(b *testing.B) {
	f, size := benchImage(b)
	for _, bc := range []struct {
		name  string
		cache int64
	}{{"cache=16M", 16 << 20}, {"cache=256M", 256 << 20}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(f, size, Options{CacheSize: bc.cache})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if bc.cache >= 2*size {
				// Warm: this measures the hit path alone.
				all := make([]byte, s.Size())
				if _, err := s.ReadAt(all, 0); err != nil {
					b.Fatal(err)
				}
			}
			var seed atomic.Uint64
			b.SetBytes(4096)
			b.SetParallelism(4) // 4 x GOMAXPROCS goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(seed.Add(1), 5))
				buf := make([]byte, 4096)
				for pb.Next() {
					off := rng.Int64N(s.Size()/4096) * 4096
					if _, err := s.ReadAt(buf, off); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			st := s.Stats()
			b.ReportMetric(float64(st.Peak)/(1<<20), "peak-MiB")
			b.ReportMetric(float64(st.Decodes), "decodes")
		})
	}
}

// BenchmarkXZSequential reads the whole image in order, 128 KiB at a time
// from 4 goroutines taking the next range in turn (the kernel's readahead
// over 4 connections), with a fresh cache each time. Run it with -cpu 1,2
// to see the readahead scale with cores.
func BenchmarkXZSequential(b *testing.B) {
	f, size := benchImage(b)
	var peak, decodes, resumes, hits, misses int64
	for i := 0; i < b.N; i++ {
		s, err := Open(f, size, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(s.Size())
		var next atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 128<<10)
				for {
					off := next.Add(int64(len(buf))) - int64(len(buf))
					if off >= s.Size() {
						return
					}
					n := min(int64(len(buf)), s.Size()-off)
					if _, err := s.ReadAt(buf[:n], off); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		st := s.Stats()
		peak = max(peak, st.Peak)
		decodes, resumes, hits, misses = st.Decodes, st.Resumes, st.Hits, st.Misses
		s.Close()
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
	b.ReportMetric(float64(decodes), "decodes")
	b.ReportMetric(float64(resumes), "resumes")
	b.ReportMetric(float64(misses)/float64(hits+misses), "miss-ratio")
}

// BenchmarkXZDecodeBlock is one 4 MiB block decoded on one core: the cost
// of a cache miss.
func BenchmarkXZDecodeBlock(b *testing.B) {
	f, size := benchImage(b)
	ix, err := ReadIndex(f, size, nil, "")
	if err != nil {
		b.Fatal(err)
	}
	bi := len(ix.Blocks) / 2
	blk, usize := ix.Blocks[bi], ix.USize(bi)
	buf := make([]byte, usize)
	b.SetBytes(usize)
	for i := 0; i < b.N; i++ {
		br, err := newBlockReader(f, blk, usize, 1<<30)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := readAll(br, buf); err != nil {
			b.Fatal(err)
		}
		br.Close()
	}
}

func readAll(br *blockReader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := br.Read(buf[n:])
		n += k
		if err != nil {
			if n == len(buf) && err == io.EOF {
				break
			}
			return n, err
		}
	}
	return n, nil
}
