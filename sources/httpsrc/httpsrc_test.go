package httpsrc

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/pack"
	"github.com/nbdloop/nbdloop/sources"
	gzipsrc "github.com/nbdloop/nbdloop/sources/gzip"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
	"github.com/nbdloop/nbdloop/sources/xz"
	"github.com/nbdloop/nbdloop/sources/zstd"
)

func TestConformance(t *testing.T) {
	data := imagetest.Data(3<<20+1234, 1)
	s := newServer(t, data, nil)
	sourcetest.Run(t, func(t *testing.T) sources.Source { return s.open(t, Options{}) }, data)
}

// The compressed formats read over HTTP serve the original bytes.
func TestFormatsOverHTTP(t *testing.T) {
	data := imagetest.Data(4<<20+512, 2)
	var seek bytes.Buffer
	if _, err := pack.Pack(&seek, bytes.NewReader(data), int64(len(data)), pack.Options{Format: pack.Zstd, BlockSize: 256 << 10, Level: 1}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		file []byte
		open func(s *Source) (sources.Source, error)
	}{
		{"xz multi-block", imagetest.XZ(t, data, "--block-size=300KiB"), func(s *Source) (sources.Source, error) {
			return xz.Open(s, s.Size(), xz.Options{CacheSize: 8 << 20})
		}},
		{"seekable zstd", seek.Bytes(), func(s *Source) (sources.Source, error) {
			return zstd.Open(s, s.Size(), zstd.Options{CacheSize: 8 << 20})
		}},
		{"gzip", imagetest.Gzip(t, data), func(s *Source) (sources.Source, error) {
			return gzipsrc.Open(s, s.Size(), gzipsrc.Options{CacheSize: 8 << 20, Interval: 512 << 10})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, tt.file, nil)
			raw := srv.open(t, Options{CacheSize: 4 << 20})
			img, err := tt.open(raw)
			if err != nil {
				raw.Close()
				t.Fatal(err)
			}
			defer img.Close()
			imagetest.CheckReads(t, img, data)
			raw.Close()
		})
	}
}

// An object replaced while it is served fails the reads of what is not
// cached with EIO, logs one line, and never serves the new bytes.
func TestReplaced(t *testing.T) {
	old := imagetest.Data(1<<20, 3)
	tests := []struct {
		name  string
		etag  string // the object's ETag ("": Last-Modified only)
		new   []byte
		etag2 string
	}{
		{"ETag", `"v1"`, imagetest.Data(1<<20, 4), `"v2"`},
		{"Last-Modified", "", imagetest.Data(1<<20, 4), "x"},
		{"another size", `"v1"`, imagetest.Data(2<<20, 4), `"v1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, old, nil)
			s.set(old, tt.etag)
			var log logLines
			src := s.open(t, Options{Logf: log.logf})
			defer src.Close()
			buf := make([]byte, 64<<10)
			if _, err := src.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, old[:len(buf)]) {
				t.Fatalf("first read = %v, or wrong bytes", err)
			}
			s.set(tt.new, tt.etag2)
			if tt.etag == "" {
				s.obj.Store(&version{data: tt.new, mod: time.Unix(1800000000, 0)})
			}
			_, err := src.ReadAt(buf, 512<<10)
			if !errors.Is(err, syscall.EIO) || !errors.Is(err, ErrReplaced) {
				t.Fatalf("read after the object was replaced = %v, want ErrReplaced (EIO)", err)
			}
			if _, err := src.ReadAt(buf, 768<<10); !errors.Is(err, ErrReplaced) {
				t.Errorf("second read after the object was replaced = %v, want ErrReplaced", err)
			}
			if _, err := src.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, old[:len(buf)]) {
				t.Errorf("cached bytes of the pinned object = %v, or not the old bytes", err)
			}
			lines := log.get()
			if len(lines) != 1 || !strings.Contains(lines[0], "replaced on the server") {
				t.Errorf("log = %q, want one line saying the object was replaced", lines)
			}
		})
	}
}

// A flaky server (every other request fails: 503, a reset, a short body)
// still serves every read.
func TestFlaky(t *testing.T) {
	data := imagetest.Data(2<<20, 5)
	tests := []struct {
		name string
		fail func(t *testing.T, w http.ResponseWriter, r *http.Request)
	}{
		{"503", func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			http.Error(w, "try later", http.StatusServiceUnavailable)
		}},
		{"reset", func(t *testing.T, w http.ResponseWriter, r *http.Request) { hijack(t, w, "") }},
		{"short body", func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			first, last := rangeOf(r)
			hijack(t, w, fmt.Sprintf("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\nETag: \"v1\"\r\n\r\n%s",
				first, last, len(data), last-first+1, data[first:first+(last-first+1)/2]))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every other request for each range fails (a count over all
			// requests could fail every try of one range when parallel
			// tries take turns).
			var mu sync.Mutex
			tries := map[string]int{}
			s := newServer(t, data, func(w http.ResponseWriter, r *http.Request, n int64) bool {
				if !isRange(r) {
					return false
				}
				mu.Lock()
				tries[r.Header.Get("Range")]++
				fail := tries[r.Header.Get("Range")]%2 == 1
				mu.Unlock()
				if fail {
					tt.fail(t, w, r)
				}
				return fail
			})
			src := s.open(t, Options{})
			defer src.Close()
			imagetest.CheckReads(t, src, data)
		})
	}
}

// A server that stops answering fails the read with EIO within the
// deadline; so does one that never stops failing.
func TestDeadline(t *testing.T) {
	data := imagetest.Data(1<<20, 6)
	tests := []struct {
		name string
		fail func(w http.ResponseWriter, r *http.Request)
		want string
	}{
		{"hangs before the headers", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "gave up after"},
		{"hangs in the body", func(w http.ResponseWriter, r *http.Request) {
			first, last := rangeOf(r)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(data)))
			w.Header().Set("Content-Length", fmt.Sprint(last-first+1))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[first : first+100])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, "gave up after"},
		{"always 503", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }, "503"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, data, func(w http.ResponseWriter, r *http.Request, n int64) bool {
				if isRange(r) {
					tt.fail(w, r)
					return true
				}
				return false
			})
			const deadline = 800 * time.Millisecond
			src := s.open(t, Options{Deadline: deadline})
			defer src.Close()
			start := time.Now()
			_, err := src.ReadAt(make([]byte, 4096), 0)
			took := time.Since(start)
			if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("read = %v, want EIO saying %q", err, tt.want)
			}
			if took > deadline+500*time.Millisecond {
				t.Errorf("the read failed after %v, past the deadline of %v", took, deadline)
			}
		})
	}
}

// A hostile server's answers fail reads, never serve wrong bytes, and are
// not retried when they cannot pass.
func TestHostile(t *testing.T) {
	data := imagetest.Data(1<<20, 7)
	respond := func(w http.ResponseWriter, status int, contentRange string, body []byte) {
		if contentRange != "" {
			w.Header().Set("Content-Range", contentRange)
		}
		w.WriteHeader(status)
		w.Write(body)
	}
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter, first, last int64)
		want   error
	}{
		{"body longer than the range", func(w http.ResponseWriter, first, last int64) {
			respond(w, 206, fmt.Sprintf("bytes %d-%d/%d", first, last, len(data)), data[first:last+2]) // chunked: no Content-Length
		}, syscall.EIO},
		{"Content-Range of other bytes", func(w http.ResponseWriter, first, last int64) {
			respond(w, 206, fmt.Sprintf("bytes %d-%d/%d", first+1, last+1, len(data)), data[first+1:last+2])
		}, syscall.EIO},
		{"Content-Range garbage", func(w http.ResponseWriter, first, last int64) {
			respond(w, 206, "bytes lots", data[first:last+1])
		}, syscall.EIO},
		{"Content-Length of another size", func(w http.ResponseWriter, first, last int64) {
			w.Header().Set("Content-Length", fmt.Sprint(last-first))
			respond(w, 206, fmt.Sprintf("bytes %d-%d/%d", first, last, len(data)), data[first:last])
		}, syscall.EIO},
		{"the size changes", func(w http.ResponseWriter, first, last int64) {
			respond(w, 206, fmt.Sprintf("bytes %d-%d/%d", first, last, 1<<62), data[first:last+1])
		}, ErrReplaced},
		{"200 to a range", func(w http.ResponseWriter, first, last int64) { respond(w, 200, "", data) }, syscall.EIO},
		{"404", func(w http.ResponseWriter, first, last int64) { respond(w, 404, "", nil) }, syscall.EIO},
		{"huge headers", func(w http.ResponseWriter, first, last int64) {
			w.Header().Set("X-Junk", strings.Repeat("x", 1<<20))
			respond(w, 206, fmt.Sprintf("bytes %d-%d/%d", first, last, len(data)), data[first:last+1])
		}, syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, data, func(w http.ResponseWriter, r *http.Request, n int64) bool {
				if !isRange(r) {
					return false
				}
				first, last := rangeOf(r)
				tt.answer(w, first, last)
				return true
			})
			src := s.open(t, Options{Deadline: time.Second})
			defer src.Close()
			start := time.Now()
			buf := make([]byte, 4096)
			_, err := src.ReadAt(buf, 4096)
			if !errors.Is(err, tt.want) || !errors.Is(err, syscall.EIO) {
				t.Errorf("read = %v, want %v", err, tt.want)
			}
			// Headers beyond the bound look like a broken connection,
			// which is tried again.
			if d := time.Since(start); d > 700*time.Millisecond && tt.name != "huge headers" {
				t.Errorf("the read took %v: a hostile answer was retried", d)
			}
		})
	}
}

// Stat refuses what cannot be served, in one line.
func TestOpenRefuses(t *testing.T) {
	data := imagetest.Data(64<<10, 8)
	noRanges := newServer(t, data, func(w http.ResponseWriter, r *http.Request, n int64) bool {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		if r.Method != http.MethodHead {
			w.Write(data)
		}
		return true
	})
	headRefused := newServer(t, data, func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if r.Method == http.MethodHead {
			http.Error(w, "no", http.StatusMethodNotAllowed)
			return true
		}
		return false
	})
	empty := newServer(t, nil, nil)
	missing := newServer(t, data, func(w http.ResponseWriter, r *http.Request, n int64) bool { http.NotFound(w, r); return true })
	redirects := newServer(t, data, func(w http.ResponseWriter, r *http.Request, n int64) bool {
		var hops int
		if _, err := fmt.Sscanf(r.URL.Path, "/hops/%d", &hops); err == nil && hops > 0 {
			http.Redirect(w, r, fmt.Sprintf("/hops/%d", hops-1), http.StatusFound)
			return true
		}
		if r.URL.Path == "/ftp" {
			http.Redirect(w, r, "ftp://example.com/disk.img", http.StatusFound)
			return true
		}
		return false
	})
	tests := []struct {
		url  string
		want string // "" opens
	}{
		{noRanges.URL + "/disk.img", "does not serve byte ranges"},
		{headRefused.URL + "/disk.img", ""},
		{empty.URL + "/disk.img", "empty"},
		{missing.URL + "/disk.img", "404 Not Found"},
		{redirects.URL + "/hops/5", ""},
		{redirects.URL + "/hops/6", "more than 5 redirects"},
		{redirects.URL + "/ftp", "leads outside http and https"},
		{"http://user:secret@" + strings.TrimPrefix(redirects.URL, "http://") + "/disk.img", "credentials in the URL are refused"},
		{"ftp://example.com/disk.img", "not an http or https URL"},
		{"http:///disk.img", "no host"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			src, err := Open(tt.url, testOptions(Options{}))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Open = %v", err)
				}
				defer src.Close()
				imagetest.CheckReads(t, src, data)
				return
			}
			if err == nil {
				src.Close()
				t.Fatalf("Open succeeded, want an error saying %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "secret") {
				t.Errorf("Open = %q, want one line saying %q (and no password)", err, tt.want)
			}
		})
	}
}

// Pin refuses an object that changed since it was attached.
func TestPin(t *testing.T) {
	data := imagetest.Data(64<<10, 9)
	s := newServer(t, data, nil)
	src := s.open(t, Options{})
	pin := src.Object().Pin()
	src.Close()
	if pin != `etag:"v1"` {
		t.Errorf("Pin() = %q", pin)
	}
	if src, err := Open(s.URL, testOptions(Options{Pin: pin})); err != nil {
		t.Errorf("Open with the same pin = %v", err)
	} else {
		src.Close()
	}
	s.set(data, `"v2"`)
	if _, err := Open(s.URL, testOptions(Options{Pin: pin})); err == nil || !strings.Contains(err.Error(), "changed on the server since it was attached") {
		t.Errorf("Open with an old pin = %v, want a refusal", err)
	}
}

// The cache bounds the memory of fetched blocks, however much is read,
// and fetches blocks in parallel, ahead of a sequential reader.
func TestCacheBudget(t *testing.T) {
	data := imagetest.Data(16<<20, 10)
	s := newServer(t, data, nil)
	const budget = 1 << 20
	src := s.open(t, Options{CacheSize: budget, BlockSize: 64 << 10, Connections: 4})
	defer src.Close()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 128<<10)
			for off := int64(g) * 4 << 20; off < int64(g+1)*4<<20; off += int64(len(buf)) {
				if _, err := src.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
					t.Errorf("ReadAt(%d) = %v, or wrong bytes", off, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := src.Stats()
	if st.Peak > budget+4*64<<10 {
		t.Errorf("the cache held up to %d bytes, beyond its budget of %d (and one block per reader)", st.Peak, budget)
	}
	if st.Prefetch == 0 {
		t.Errorf("no block was fetched ahead of the sequential readers")
	}
}

// https works with the server's certificate trusted, and is refused
// without.
func TestHTTPS(t *testing.T) {
	data := imagetest.Data(1<<20, 13)
	s := &server{}
	s.set(data, `"v1"`)
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	defer s.Close()
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	src, err := Open(s.URL+"/disk.img", testOptions(Options{TLS: &tls.Config{RootCAs: pool}}))
	if err != nil {
		t.Fatal(err)
	}
	imagetest.CheckReads(t, src, data)
	src.Close()
	if _, err := Open(s.URL+"/disk.img", testOptions(Options{Deadline: time.Second})); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Open of an untrusted https server = %v, want a certificate error", err)
	}
}

// Sequential reads are served by few long range requests (runs of up to
// RunSize), every byte asked for once; random reads by one block each.
func TestRuns(t *testing.T) {
	data := imagetest.Data(8<<20, 13)
	var asked atomic.Int64
	s := newServer(t, data, func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if isRange(r) {
			first, last := rangeOf(r)
			asked.Add(last - first + 1)
		}
		return false
	})
	src := s.open(t, Options{BlockSize: 64 << 10, RunSize: 1 << 20, CacheSize: 64 << 20})
	defer src.Close()
	before := s.ranges.Load()
	readAll(t, src, data)
	if n := s.ranges.Load() - before; n > 20 {
		t.Errorf("%d range requests for 128 blocks read in order, want at most 20", n)
	}
	if got := asked.Load(); got != int64(len(data)) {
		t.Errorf("%d bytes asked for, want %d: each once", got, len(data))
	}
	if st := src.Stats(); st.Runs == 0 {
		t.Errorf("Stats = %+v, want runs", st)
	}

	rnd := s.open(t, Options{BlockSize: 64 << 10, RunSize: 1 << 20})
	defer rnd.Close()
	asked.Store(0)
	buf := make([]byte, 4096)
	for _, off := range []int64{5 << 20, 1 << 20, 7 << 20, 3 << 20} {
		if _, err := rnd.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
			t.Fatalf("ReadAt(%d) = %v, or wrong bytes", off, err)
		}
	}
	if got := asked.Load(); got != 4*64<<10 {
		t.Errorf("%d bytes asked for by four random reads, want four blocks", got)
	}
}
