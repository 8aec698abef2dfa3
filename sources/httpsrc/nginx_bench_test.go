package httpsrc

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/nginxtest"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// benchObject is the size of the object the nginx benchmarks read.
const benchObject = 128 << 20

// BenchmarkNginxSequential reads an object on nginx whole: one GET of it
// (what curl -o does), and through a Source with the defaults, cold, in 1
// MiB reads eight at a time (fio's read-full-1m-qd8 of the bench's http
// group): copied out (ReadAt), lent and given back uncopied (Lend, as the
// NBD server writes the READ replies the cache serves), or put into pipes
// straight from nginx's answers and spliced on to /dev/null (PipeRead, as
// the NBD server writes those of large reads the cache has none of).
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
	for _, how := range []string{"copy", "lend", "pipe"} {
		name := map[string]string{"copy": "Source-1m-qd8", "lend": "Source-lend-1m-qd8", "pipe": "Source-pipe-1m-qd8"}[how]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(benchObject)
			for range b.N {
				src, err := Open(raw, Options{})
				if err != nil {
					b.Fatal(err)
				}
				readQD(b, src, 1<<20, 8, how)
				if how == "pipe" && src.DirectReads() != benchObject>>20 {
					b.Fatalf("%d reads served straight, want all %d", src.DirectReads(), benchObject>>20)
				}
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
// with ReadAt ("copy"), Lend and its release ("lend"), or PipeRead,
// splice(2) from its pipes to /dev/null and its release ("pipe").
func readQD(b *testing.B, src *Source, bs int64, qd int, how string) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
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
				if how == "pipe" {
					if err := pipeToNull(src, off, n, int(null.Fd())); err != nil {
						b.Error(err)
						return
					}
					continue
				}
				if how == "lend" {
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

// pipeToNull reads n bytes at off with PipeRead and splices them from its
// pipes to the file null.
func pipeToNull(src *Source, off, n int64, null int) error {
	fds, release, ok := src.PipeRead(off, n)
	if !ok {
		return fmt.Errorf("PipeRead(%d, %d) did not serve the read", off, n)
	}
	defer release()
	for _, fd := range fds {
		for {
			k, err := unix.Splice(fd, nil, null, nil, int(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if err == unix.EAGAIN || k == 0 {
				break // this pipe is empty
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// BenchmarkNginxPipeRead: a 1 MiB read that PipeRead serves, one at a time
// over the object again and again, spliced on to /dev/null; it allocates
// nothing once its connection and pipes are made.
func BenchmarkNginxPipeRead(b *testing.B) {
	ng := nginxtest.Start(b, b.TempDir())
	raw := ng.Put(b, "disk.img", imagetest.Data(16<<20, 4), time.Unix(1700000000, 0))
	src, err := Open(raw, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	if err := pipeToNull(src, 0, 1<<20, int(null.Fd())); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := pipeToNull(src, int64(i%16)<<20, 1<<20, int(null.Fd())); err != nil {
			b.Fatal(err)
		}
	}
}
