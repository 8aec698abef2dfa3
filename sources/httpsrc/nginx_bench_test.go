package httpsrc

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/nginxtest"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// benchObject is the size of the object the nginx benchmarks read.
const benchObject = 128 << 20

// BenchmarkNginxSequential reads an object on nginx whole: one GET of it
// (what curl -o does), and through a Source with the defaults, cold, in 1
// MiB reads eight at a time (fio's read-full-1m-qd8 of the bench's http
// group): copied out (ReadAt), or lent and given back uncopied (Lend, as
// the NBD server writes its READ replies).
func BenchmarkNginxSequential(b *testing.B) {
	ng := nginxtest.Start(b, b.TempDir())
	raw := ng.Put(b, "disk.img", imagetest.Data(benchObject, 3), time.Unix(1700000000, 0))
	b.Run("download", func(b *testing.B) {
		b.SetBytes(benchObject)
		for range b.N {
			resp, err := http.Get(raw)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != benchObject {
				b.Fatalf("download: %d bytes, %v", n, err)
			}
		}
	})
	for _, lend := range []bool{false, true} {
		name := "Source-1m-qd8"
		if lend {
			name = "Source-lend-1m-qd8"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(benchObject)
			for range b.N {
				src, err := Open(raw, Options{})
				if err != nil {
					b.Fatal(err)
				}
				readQD(b, src, 1<<20, 8, lend)
				st := src.Stats()
				b.ReportMetric(float64(st.Misses), "misses/op")
				b.ReportMetric(float64(st.Runs), "runs/op")
				b.ReportMetric(float64(st.Decodes), "fetches/op")
				src.Close()
			}
		})
	}
}

// readQD reads src whole in reads of bs bytes, qd at a time, in order,
// with ReadAt or, when lend, with Lend and its release.
func readQD(b *testing.B, src *Source, bs int64, qd int, lend bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range qd {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bs)
			for {
				off := next.Add(bs) - bs
				if off >= src.Size() {
					return
				}
				n := min(bs, src.Size()-off)
				if lend {
					_, release, err := src.Lend(off, n)
					if err != nil {
						b.Error(err)
						return
					}
					release()
					continue
				}
				if _, err := src.ReadAt(buf[:n], off); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
