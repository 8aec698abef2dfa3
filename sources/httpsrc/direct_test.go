package httpsrc

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/nginxtest"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// pipeRead calls PipeRead and, when it served the read, returns the bytes
// the pipe held (all of them, to check that it held no more) and gives the
// pipe back.
func pipeRead(t *testing.T, src *Source, off, n int64) ([]byte, bool) {
	t.Helper()
	fds, release, ok := src.PipeRead(off, n)
	if !ok {
		return nil, false
	}
	defer release()
	var buf []byte
	for _, fd := range fds {
		held, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, held)
		for got := 0; got < held; {
			k, err := unix.Read(fd, b[got:])
			if err != nil {
				t.Fatalf("reading the pipe: %v", err)
			}
			got += k
		}
		buf = append(buf, b...)
	}
	return buf, true
}

// TestDirectNginx: large reads that the cache has none of come straight
// from nginx's answers, exactly the bytes asked for, on connections and
// pipes used again; reads the cache holds part of, small ones and too
// large ones are left to the cache; a replaced object is not served so.
func TestDirectNginx(t *testing.T) {
	ng := nginxtest.Start(t, t.TempDir())
	data := imagetest.Data(8<<20+4096, 21)
	raw := ng.Put(t, "disk.img", data, time.Unix(1700000000, 0))
	src, err := Open(raw, testOptions(Options{Connections: 2}))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.ReadAt(make([]byte, 4096), 6<<20); err != nil { // block 96 cached
		t.Fatal(err)
	}
	served := 0
	for _, tc := range []struct {
		name   string
		off, n int64
		direct bool
	}{
		{"two blocks", 0, 128 << 10, true},
		{"1 MiB", 1 << 20, 1 << 20, true},
		{"unaligned", 3<<20 + 12345, 700 << 10, true},
		{"to the end", int64(len(data)) - 1<<20, 1 << 20, true},
		{"the same again", 1 << 20, 1 << 20, true},
		{"under two blocks", 4 << 20, 128<<10 - 1, false},
		{"over MaxDirectRead", 0, MaxDirectRead + 4096, false},
		{"a block cached", 6<<20 - 512<<10, 1 << 20, false},
		{"past the end", int64(len(data)) - 512<<10, 1 << 20, false},
	} {
		got, ok := pipeRead(t, src, tc.off, tc.n)
		if ok != tc.direct {
			t.Errorf("%s: PipeRead ok = %v, want %v", tc.name, ok, tc.direct)
			continue
		}
		if ok {
			served++
			if !bytes.Equal(got, data[tc.off:tc.off+tc.n]) {
				t.Errorf("%s: the pipe held %d bytes, not the %d at %d", tc.name, len(got), tc.n, tc.off)
			}
		}
	}
	if n := src.DirectReads(); n != int64(served) {
		t.Errorf("DirectReads = %d, want %d", n, served)
	}
	if st := src.Stats(); st.Misses != 1 {
		t.Errorf("cache misses = %d, want 1 (the reads served straight took no block)", st.Misses)
	}
	d := src.direct
	d.mu.Lock()
	conns, pipes := len(d.idle), len(d.free)
	d.mu.Unlock()
	if conns != 1 || pipes != 1 {
		t.Errorf("idle connections %d, sets of pipes %d after reads one at a time, want 1 and 1", conns, pipes)
	}

	// Replaced: nginx answers 412, the read goes the cache's way and
	// fails there.
	ng.Put(t, "disk.img", imagetest.Data(len(data), 22), time.Unix(1700000100, 0))
	if _, ok := pipeRead(t, src, 2<<20, 1<<20); ok {
		t.Error("PipeRead served a replaced object")
	}
	if _, _, err := src.Lend(2<<20, 1<<20); !errors.Is(err, ErrReplaced) {
		t.Errorf("Lend after the 412 = %v, want ErrReplaced", err)
	}
	if _, ok := pipeRead(t, src, 4<<20, 1<<20); ok {
		t.Error("PipeRead served an object known to be replaced")
	}
}

// TestDirectAnswers: an answer the direct path does not know to be right
// is not served from the pipe (the read then goes through the cache, which
// gets it right); the ones it takes are served, and a connection the server
// closes is not used again.
func TestDirectAnswers(t *testing.T) {
	data := imagetest.Data(4<<20, 23)
	const off, n = 1 << 20, 256 << 10
	rng := fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, len(data))
	body := data[off : off+n]
	// raw answers the direct path's range request with the bytes given
	// (its connection then closed), and every other request as the
	// object's server.
	type answer struct {
		name   string
		head   string // status line and headers, without the blank line
		body   []byte
		direct bool
		closed bool // the direct path knows the connection is closed
	}
	for _, tc := range []answer{
		{"right", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + "\r\nContent-Length: 262144\r\nETag: \"v1\"", body, true, false},
		{"lower case, spaces, Connection: close", "HTTP/1.1 206 x\r\ncontent-range:   " + rng + "\t\r\ncontent-length:262144\r\nconnection: keep-alive, Close", body, true, true},
		{"200", "HTTP/1.1 200 OK\r\nContent-Length: " + fmt.Sprint(len(data)), data, false, false},
		{"HTTP/1.0", "HTTP/1.0 206 Partial Content\r\nContent-Range: " + rng + "\r\nContent-Length: 262144", body, false, false},
		{"another range", "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-262143/4194304\r\nContent-Length: 262144", data[:n], false, false},
		{"another size", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + strings.Replace(rng, "4194304", "4194305", 1) + "\r\nContent-Length: 262144", body, false, false},
		{"no length", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng, body, false, false},
		{"two lengths", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + "\r\nContent-Length: 262144\r\nContent-Length: 262144", body, false, false},
		{"chunked", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + "\r\nContent-Length: 262144\r\nTransfer-Encoding: chunked", body, false, false},
		{"gzip", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + "\r\nContent-Length: 262144\r\nContent-Encoding: gzip", body, false, false},
		{"another ETag", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + "\r\nContent-Length: 262144\r\nETag: \"v2\"", body, false, false},
		{"folded header", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + "\r\nX-A: 1\r\n b\r\nContent-Length: 262144", body, false, false},
		{"short body", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + "\r\nContent-Length: 262144", body[:n-1], false, false},
		{"long head", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + "\r\nContent-Length: 262144\r\nX-Pad: " + strings.Repeat("a", maxDirectHead), body, false, false},
		{"body longer", "HTTP/1.1 206 Partial Content\r\nContent-Range: " + rng + "\r\nContent-Length: 262144", append(append([]byte(nil), body...), 'x'), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, data, func(w http.ResponseWriter, r *http.Request, _ int64) bool {
				if r.Header.Get("Range") != fmt.Sprintf("bytes=%d-%d", off, off+n-1) || r.Header.Get("If-Match") != `"v1"` {
					return false
				}
				hijack(t, w, tc.head+"\r\n\r\n"+string(tc.body))
				return true
			})
			src := s.open(t, Options{})
			defer src.Close()
			got, ok := pipeRead(t, src, off, n)
			if ok != tc.direct {
				t.Fatalf("PipeRead ok = %v, want %v", ok, tc.direct)
			}
			if ok && !bytes.Equal(got, body) {
				t.Fatalf("the pipe held %d bytes, not the range's", len(got))
			}
			if d := src.direct; tc.closed && len(d.idle) != 0 {
				t.Errorf("%d connections kept after an answer on a closed connection", len(d.idle))
			}
			// The cache's way gets it right.
			bufs, release, err := src.Lend(off, n)
			if err != nil {
				t.Fatalf("Lend: %v", err)
			}
			if !bytes.Equal(bytes.Join(bufs, nil), body) {
				t.Error("Lend: wrong bytes")
			}
			release()
		})
	}
}

// TestDirectStaleConnection: an idle connection the server closed is
// found out on the next read, which goes on a new one.
func TestDirectStaleConnection(t *testing.T) {
	data := imagetest.Data(4<<20, 24)
	s := newServer(t, data, nil)
	src := s.open(t, Options{})
	defer src.Close()
	for i, off := range []int64{0, 1 << 20, 2 << 20} {
		got, ok := pipeRead(t, src, off, 1<<20)
		if !ok || !bytes.Equal(got, data[off:off+1<<20]) {
			t.Fatalf("read %d: ok %v, or wrong bytes", i, ok)
		}
		s.CloseClientConnections()
	}
	if n := src.DirectReads(); n != 3 {
		t.Errorf("DirectReads = %d, want 3", n)
	}
}

// TestDirectNotHere: the objects that have no direct path.
func TestDirectNotHere(t *testing.T) {
	data := imagetest.Data(1<<20, 25)
	s := newServer(t, data, nil)
	t.Run("CacheDir", func(t *testing.T) {
		src := s.open(t, Options{CacheDir: t.TempDir()})
		defer src.Close()
		if _, ok := pipeRead(t, src, 0, 512<<10); ok {
			t.Error("PipeRead served a read whose blocks the cache keeps on disk")
		}
	})
}

// TestDirectFailsOff: after maxDirectFails failures in a row the direct
// path asks the server no more.
func TestDirectFailsOff(t *testing.T) {
	data := imagetest.Data(4<<20, 26)
	s := newServer(t, data, func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		if r.Header.Get("User-Agent") == "nbdloop" && isRange(r) {
			w.Header().Set("Transfer-Encoding", "chunked") // the direct path's refusal
		}
		return false
	})
	var log logLines
	src := s.open(t, Options{Logf: log.logf})
	defer src.Close()
	for i := 0; i < maxDirectFails+2; i++ {
		if _, ok := pipeRead(t, src, 0, 256<<10); ok {
			t.Fatal("PipeRead served a chunked answer")
		}
	}
	if got := s.requests.Load(); got != 1+maxDirectFails {
		t.Errorf("%d requests, want Stat's and %d", got, maxDirectFails)
	}
	if lines := log.get(); len(lines) != 1 || !strings.Contains(lines[0], "through the cache") {
		t.Errorf("log = %q, want one line", lines)
	}
}

// TestCheckDirectHead tables the heads checkDirectHead takes and refuses.
func TestCheckDirectHead(t *testing.T) {
	const rng, length = "bytes 0-9/100", "10"
	for _, tc := range []struct {
		head string
		keep bool
		ok   bool
	}{
		{"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\n\r\n", true, true},
		{"HTTP/1.1 206 \r\ncontent-length: 10\r\nCONTENT-RANGE:bytes 0-9/100\r\nConnection: close\r\n\r\n", false, true},
		{"HTTP/1.1 206 P\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\nContent-Encoding: identity\r\nETag: \"e\"\r\n\r\n", true, true},
		{"HTTP/1.1 206 P\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\nETag: W/\"e\"\r\n\r\n", false, false},
		{"HTTP/1.1 206 P\r\nContent-Range : bytes 0-9/100\r\nContent-Length: 10\r\n\r\n", false, false},
		{"HTTP/1.1 206 P\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 010\r\n\r\n", false, false},
		{"HTTP/1.1 2060 P\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\n\r\n", false, false},
		{"HTTP/1.1 206 P\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\nbroken\r\n\r\n", false, false},
		{"HTTP/1.1 206 P\r\n\r\n", false, false},
		{"", false, false},
	} {
		keep, err := checkDirectHead([]byte(tc.head), []byte(rng), []byte(length), `"e"`)
		if (err == nil) != tc.ok || (tc.ok && keep != tc.keep) {
			t.Errorf("checkDirectHead(%q) = %v, %v; want keep %v, ok %v", tc.head, keep, err, tc.keep, tc.ok)
		}
	}
}

// FuzzDirectHead: no head makes checkDirectHead panic, and one it takes
// has the range and the length asked for.
func FuzzDirectHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 206 \r\n:\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 206 \r\nContent-Length: 18446744073709551616\r\nContent-Range: bytes 9223372036854775807-0/-1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		_, err := checkDirectHead(head, []byte("bytes 0-9/100"), []byte("10"), `"e"`)
		if err == nil && (!bytes.Contains(head, []byte("bytes 0-9/100")) || !bytes.HasPrefix(head, []byte("HTTP/1.1 206 "))) {
			t.Errorf("took %q", head)
		}
	})
}

// TestDirectAfterCacheReads: small reads at the start (a partition table)
// go through the cache; the first large read, which the cache has part
// of, is lent from it without starting readahead, so the large reads
// after it come straight from the server, not from runs the cache fetches
// ahead of them.
func TestDirectAfterCacheReads(t *testing.T) {
	data := imagetest.Data(16<<20, 27)
	s := newServer(t, data, nil)
	src := s.open(t, Options{})
	defer src.Close()
	for _, off := range []int64{0, 512, 4096} {
		if _, err := src.ReadAt(make([]byte, 512), off); err != nil {
			t.Fatal(err)
		}
	}
	bufs, release, err := src.Lend(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(bufs, nil), data[:1<<20]) {
		t.Error("Lend: wrong bytes")
	}
	release()
	for off := int64(1 << 20); off < 8<<20; off += 1 << 20 {
		got, ok := pipeRead(t, src, off, 1<<20)
		if !ok || !bytes.Equal(got, data[off:off+1<<20]) {
			t.Fatalf("read at %d MiB: PipeRead ok %v, or wrong bytes", off>>20, ok)
		}
	}
	if st := src.Stats(); st.Runs != 0 {
		t.Errorf("%d readahead runs, want none", st.Runs)
	}
}

// TestDirectStandsAside: a connection that fails (here: cut before any
// answer) makes the direct path stand aside for its pause, leaving the
// reads to the cache without asking the server, and then serve again;
// connection failures do not turn it off for good, however many.
func TestDirectStandsAside(t *testing.T) {
	data := imagetest.Data(8<<20, 28)
	var cut atomic.Int64 // direct requests to cut
	var direct atomic.Int64
	s := newServer(t, data, func(w http.ResponseWriter, r *http.Request, _ int64) bool {
		if !isRange(r) {
			return false
		}
		if first, last := rangeOf(r); last-first+1 == 1<<20 {
			direct.Add(1)
			if cut.Add(-1) >= 0 {
				hijack(t, w, "")
				return true
			}
		}
		return false
	})
	src := s.open(t, Options{})
	defer src.Close()
	src.direct.pause = 200 * time.Millisecond
	for round := range maxDirectFails + 2 {
		cut.Store(1)
		if _, ok := pipeRead(t, src, 0, 1<<20); ok {
			t.Fatalf("round %d: PipeRead served a cut connection", round)
		}
		asked := direct.Load()
		if _, ok := pipeRead(t, src, 1<<20, 1<<20); ok || direct.Load() != asked {
			t.Fatalf("round %d: PipeRead during the pause: ok %v, %d requests, want none", round, ok, direct.Load()-asked)
		}
		time.Sleep(250 * time.Millisecond)
	}
	got, ok := pipeRead(t, src, 2<<20, 1<<20)
	if !ok || !bytes.Equal(got, data[2<<20:3<<20]) {
		t.Fatalf("after the pauses: PipeRead ok %v, or wrong bytes", ok)
	}
}
