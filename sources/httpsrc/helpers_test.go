package httpsrc

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// version is what the test server serves as the object.
type version struct {
	data []byte
	etag string    // "" for none
	mod  time.Time // zero for no Last-Modified
}

// server serves one object with http.ServeContent (ranges, If-Match,
// If-Unmodified-Since), behind an optional hook that may answer a request
// itself (a flaky, hanging or hostile server).
type server struct {
	*httptest.Server
	obj      atomic.Pointer[version]
	requests atomic.Int64
	ranges   atomic.Int64 // range requests answered by ServeContent
	// hook, when it returns true, has answered request number n.
	hook func(w http.ResponseWriter, r *http.Request, n int64) bool
}

func newServer(t *testing.T, data []byte, hook func(w http.ResponseWriter, r *http.Request, n int64) bool) *server {
	t.Helper()
	s := &server{hook: hook}
	s.set(data, `"v1"`)
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// set replaces the object.
func (s *server) set(data []byte, etag string) {
	s.obj.Store(&version{data: data, etag: etag, mod: time.Unix(1700000000+int64(len(etag)), 0)})
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	if s.hook != nil && s.hook(w, r, n) {
		return
	}
	v := s.obj.Load()
	if v.etag != "" {
		w.Header().Set("ETag", v.etag)
	}
	if r.Header.Get("Range") != "" {
		s.ranges.Add(1)
	}
	http.ServeContent(w, r, "", v.mod, bytes.NewReader(v.data))
}

// open opens the server's object with short timeouts and small blocks.
func (s *server) open(t *testing.T, opts Options) *Source {
	t.Helper()
	src, err := Open(s.URL+"/disk.img", testOptions(opts))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return src
}

func testOptions(opts Options) Options {
	if opts.BlockSize == 0 {
		opts.BlockSize = 64 << 10
	}
	if opts.Deadline == 0 {
		opts.Deadline = 5 * time.Second
	}
	return opts
}

// logLines collects what a Source logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// isRange reports whether r is a range request after the first byte's
// (the reads, not Stat's).
func isRange(r *http.Request) bool {
	rng := r.Header.Get("Range")
	return rng != "" && rng != "bytes=0-0"
}

// rangeOf parses a "bytes=A-B" header.
func rangeOf(r *http.Request) (first, last int64) {
	var a, b string
	rng := r.Header.Get("Range")[len("bytes="):]
	for i := range rng {
		if rng[i] == '-' {
			a, b = rng[:i], rng[i+1:]
		}
	}
	first, _ = strconv.ParseInt(a, 10, 64)
	last, _ = strconv.ParseInt(b, 10, 64)
	return first, last
}

// hijack closes the connection of w without an answer (a reset).
func hijack(t *testing.T, w http.ResponseWriter, raw string) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	buf.WriteString(raw)
	buf.Flush()
	conn.Close()
}
