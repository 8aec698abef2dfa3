package bucket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/internal/s3test"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

const testBucket = "disks"

// env is what the tests share: one SeaweedFS, its bucket as a Store, and
// a counter for fresh prefixes.
type env struct {
	srv   *s3test.Server
	store *S3Store
	mu    sync.Mutex
	n     int
}

// prefix returns a prefix no other test uses.
func (e *env) prefix(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	return fmt.Sprintf("%s-%d/", strings.ReplaceAll(name, "/", "-"), e.n)
}

// disk creates a disk and returns its prefix.
func (e *env) disk(t *testing.T, size, osize int64) string {
	t.Helper()
	p := e.prefix(t.Name())
	if err := Create(context.Background(), e.store, p, size, osize); err != nil {
		t.Fatalf("Create(%s, %d, %d): %v", p, size, osize, err)
	}
	return p
}

// open opens the disk at prefix, closing it when the test ends.
func (e *env) open(t *testing.T, prefix string, opts Options) *Source {
	t.Helper()
	s, err := Open(context.Background(), e.store, prefix, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", prefix, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// chunks lists the chunk objects of the disk at prefix.
func (e *env) chunks(t *testing.T, prefix string) []string {
	t.Helper()
	var keys []string
	err := e.store.List(context.Background(), prefix+"chunks/", func(k string) bool {
		keys = append(keys, strings.TrimPrefix(k, prefix+"chunks/"))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestSeaweedFS runs the package's tests against one real SeaweedFS.
func TestSeaweedFS(t *testing.T) {
	srv := s3test.Start(t, t.TempDir())
	srv.CreateBucket(t, testBucket)
	srv.Put(t, testBucket, "warm-up", []byte("a fresh server grows its first volume")) // retried
	e := &env{srv: srv, store: NewS3Store(srv.Client(), testBucket)}
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"Conditions", testConditions},
		{"Conformance", testConformance},
		{"UnwrittenZeros", testUnwrittenZeros},
		{"TrimDeletes", testTrimDeletes},
		{"Extents", testExtents},
		{"FlushDurable", testFlushDurable},
		{"ReadsWhileUploading", testReadsWhileUploading},
		{"WriteDuringUpload", testWriteDuringUpload},
		{"Throttle", testThrottle},
		{"CreateRefuses", testCreateRefuses},
		{"HostileManifest", testHostileManifest},
		{"HostileChunk", testHostileChunk},
		{"LeaseRefuses", testLeaseRefuses},
		{"LeaseExpires", testLeaseExpires},
		{"LeaseLost", testLeaseLost},
		{"LeaseOwnConnections", testLeaseOwnConnections},
		{"ServerRestart", testServerRestart}, // last: it stops the server
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, e) })
	}
}

// testConditions: the server honours If-None-Match: * and If-Match on
// PUT, and of several conditional creates at once exactly one wins.
func testConditions(t *testing.T, e *env) {
	ctx := context.Background()
	key := e.prefix("cond") + "obj"
	etag1, err := e.store.Put(ctx, key, []byte("one"), Cond{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("If-None-Match: * on a missing object: %v", err)
	}
	etag2, err := e.store.Put(ctx, key, []byte("two"), Cond{IfMatch: etag1})
	if err != nil {
		t.Fatalf("If-Match with the current ETag: %v", err)
	}
	for _, tt := range []struct {
		name string
		cond Cond
	}{
		{"If-None-Match on an existing object", Cond{IfNoneMatch: true}},
		{"If-Match with an old ETag", Cond{IfMatch: etag1}},
		{"If-Match with a made-up ETag", Cond{IfMatch: `"0123456789abcdef0123456789abcdef"`}},
	} {
		if _, err := e.store.Put(ctx, key, []byte("three"), tt.cond); !errors.Is(err, ErrPrecondition) {
			t.Errorf("%s: %v, want ErrPrecondition", tt.name, err)
		}
	}
	buf := make([]byte, 16)
	if n, etag, err := e.store.Get(ctx, key, buf); err != nil || string(buf[:n]) != "two" || etag != etag2 {
		t.Errorf("Get = %q, %s, %v; want \"two\", %s", buf[:n], etag, err, etag2)
	}
	race := e.prefix("race") + "obj"
	var wins, lost int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := e.store.Put(ctx, race, []byte{byte(i)}, Cond{IfNoneMatch: true})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrPrecondition):
				lost++
			default:
				t.Errorf("racing create: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || lost != 7 {
		t.Errorf("8 racing If-None-Match creates: %d won, %d refused; want 1 and 7", wins, lost)
	}
}

func testConformance(t *testing.T, e *env) {
	const size = 1<<20 + 4096 // 17 chunks, the last of 4 KiB
	sourcetest.RunSparse(t, func(t *testing.T) sources.Source {
		p := e.disk(t, size, 64<<10)
		s, err := Open(context.Background(), e.store, p, Options{CacheSize: 6 << 16, Parallel: 3})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, size, sourcetest.Zeros{})
}

// testUnwrittenZeros: only written chunks are stored, and a chunk written
// with zeros is not.
func testUnwrittenZeros(t *testing.T, e *env) {
	p := e.disk(t, 1<<20, 64<<10)
	s := e.open(t, p, Options{})
	write(t, s, bytes.Repeat([]byte{7}, 100), 5*65536+10)
	write(t, s, make([]byte, 65536), 9*65536)
	flush(t, s)
	if got := e.chunks(t, p); fmt.Sprint(got) != "[0000000000000005]" {
		t.Errorf("chunk objects %v, want [0000000000000005]", got)
	}
	want := make([]byte, 1<<20)
	copy(want[5*65536+10:], bytes.Repeat([]byte{7}, 100))
	r := e.open(t, p, Options{ReadOnly: true})
	if got := read(t, r, 0, 1<<20); !bytes.Equal(got, want) {
		t.Errorf("read back by another Source: differs from what was written")
	}
	// A writer knows which chunks are stored: it fetches only those, and
	// trims the others without a request.
	s.Close()
	c := &counting{Store: e.store}
	w, err := Open(context.Background(), c, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := read(t, w, 0, 1<<20); !bytes.Equal(got, want) {
		t.Errorf("read back by the next writer: differs from what was written")
	}
	if err := w.Trim(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	flush(t, w)
	if c.gets != 1 || c.deletes != 1 {
		t.Errorf("reading and trimming the disk with one stored chunk made %d GETs and %d DELETEs of chunks, want 1 and 1", c.gets, c.deletes)
	}
}

// counting is a Store that counts the requests for chunks.
type counting struct {
	Store
	mu            sync.Mutex
	gets, deletes int
}

func (c *counting) Get(ctx context.Context, key string, p []byte) (int, string, error) {
	if strings.Contains(key, "/chunks/") {
		c.mu.Lock()
		c.gets++
		c.mu.Unlock()
	}
	return c.Store.Get(ctx, key, p)
}

func (c *counting) Delete(ctx context.Context, key string) error {
	c.mu.Lock()
	c.deletes++
	c.mu.Unlock()
	return c.Store.Delete(ctx, key)
}

// testTrimDeletes: trimming or zeroing a whole chunk deletes its object;
// part of a chunk is written as zeros.
func testTrimDeletes(t *testing.T, e *env) {
	const cs = 64 << 10
	for _, tt := range []struct {
		name       string
		op         func(s *Source) error
		wantChunks string
		zeroed     [2]int64 // the range that reads as zeros afterwards
	}{
		{"trim one chunk", func(s *Source) error { return s.Trim(1*cs, cs) }, "[0 2 3]", [2]int64{cs, 2 * cs}},
		{"zero no-hole one chunk", func(s *Source) error { return s.Zero(2*cs, cs, false) }, "[0 1 3]", [2]int64{2 * cs, 3 * cs}},
		{"trim across chunks", func(s *Source) error { return s.Trim(cs/2, 2*cs) }, "[0 2 3]", [2]int64{cs / 2, 5 * cs / 2}},
		{"trim part of a chunk", func(s *Source) error { return s.Trim(3*cs+512, 4096) }, "[0 1 2 3]", [2]int64{3*cs + 512, 3*cs + 4608}},
		{"trim everything", func(s *Source) error { return s.Trim(0, 4*cs) }, "[]", [2]int64{0, 4 * cs}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := e.disk(t, 4*cs, cs)
			s := e.open(t, p, Options{})
			data := bytes.Repeat([]byte("abcdefgh"), 4*cs/8)
			write(t, s, data, 0)
			flush(t, s)
			if err := tt.op(s); err != nil {
				t.Fatal(err)
			}
			flush(t, s)
			got := []int64{}
			for _, k := range e.chunks(t, p) {
				i, err := strconv.ParseInt(k, 16, 64)
				if err != nil {
					t.Fatalf("chunk object %s: %v", k, err)
				}
				got = append(got, i)
			}
			if fmt.Sprint(got) != tt.wantChunks {
				t.Errorf("chunk objects %v, want %s", got, tt.wantChunks)
			}
			want := bytes.Clone(data)
			clear(want[tt.zeroed[0]:tt.zeroed[1]])
			r := e.open(t, p, Options{ReadOnly: true})
			if !bytes.Equal(read(t, r, 0, 4*cs), want) || !bytes.Equal(read(t, s, 0, 4*cs), want) {
				t.Errorf("contents after the trim differ from the data with [%d, %d) zeroed", tt.zeroed[0], tt.zeroed[1])
			}
		})
	}
}

func write(t *testing.T, s *Source, p []byte, off int64) {
	t.Helper()
	if _, err := s.WriteAt(p, off); err != nil {
		t.Fatalf("WriteAt(len=%d, off=%d): %v", len(p), off, err)
	}
}

func read(t *testing.T, s *Source, off, n int64) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := s.ReadAt(p, off); err != nil {
		t.Fatalf("ReadAt(len=%d, off=%d): %v", n, off, err)
	}
	return p
}

func flush(t *testing.T, s *Source) {
	t.Helper()
	if err := s.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

// crash stops s as a killed process would: nothing flushed, the lease
// left as it is.
func crash(s *Source) {
	s.fail(errClosed)
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func isEIO(err error) bool { return errors.Is(err, syscall.EIO) }
