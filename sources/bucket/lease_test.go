package bucket

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testFlushDurable: what was flushed before a crash is there when the
// disk is opened again (the lease taken over from the dead holder).
func testFlushDurable(t *testing.T, e *env) {
	const cs = 64 << 10
	p := e.disk(t, 16*cs, cs)
	s := e.open(t, p, Options{Holder: Holder{Host: "first", PID: 1}})
	flushed := bytes.Repeat([]byte("flushed!"), 3*cs/8)
	write(t, s, flushed, cs/2)
	flush(t, s)
	write(t, s, bytes.Repeat([]byte{1}, cs), 8*cs) // not flushed: may be lost
	crash(s)
	_, err := Open(context.Background(), e.store, p, Options{})
	var held *HeldError
	if !errors.As(err, &held) || held.Holder.Host != "first" {
		t.Fatalf("Open after a crash, lease unexpired: %v, want a HeldError naming host \"first\"", err)
	}
	r := e.open(t, p, Options{TakeOver: func(h Holder) bool { return h.Host == "first" }})
	if got := read(t, r, cs/2, int64(len(flushed))); !bytes.Equal(got, flushed) {
		t.Errorf("after a crash, the flushed bytes read back differently")
	}
	if got := read(t, r, 0, cs/2); !bytes.Equal(got, make([]byte, cs/2)) {
		t.Errorf("after a crash, bytes never written are not zeros")
	}
}

// testReadsWhileUploading: a reader sees every write at once, while the
// chunk is being stored, and across Flushes.
func testReadsWhileUploading(t *testing.T, e *env) {
	const cs = 64 << 10
	p := e.disk(t, 8*cs, cs)
	s := e.open(t, p, Options{CacheSize: 4 * cs, Parallel: 4})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Flush(); err != nil {
				t.Errorf("Flush: %v", err)
				return
			}
		}
	})
	buf := make([]byte, 4096)
	for i := range 200 {
		off := int64(i%8)*cs + int64(i%13)*4096
		val := bytes.Repeat([]byte{byte(i + 1)}, 4096)
		write(t, s, val, off)
		if _, err := s.ReadAt(buf, off); err != nil || !bytes.Equal(buf, val) {
			t.Fatalf("write %d: read back %x..., %v; want %x...", i, buf[:4], err, val[:4])
		}
	}
	close(stop)
	wg.Wait()
}

func testCreateRefuses(t *testing.T, e *env) {
	ctx := context.Background()
	p := e.disk(t, 1<<20, 0)
	if err := Create(ctx, e.store, p, 1<<20, 0); !errors.Is(err, ErrExists) {
		t.Errorf("Create over a disk: %v, want ErrExists", err)
	}
	q := e.prefix("leftover")
	e.srv.Put(t, testBucket, q+"chunks/0000000000000003", []byte("old"))
	if err := Create(ctx, e.store, q, 1<<20, 0); !errors.Is(err, ErrExists) {
		t.Errorf("Create over left-over chunks: %v, want ErrExists", err)
	}
	for _, tt := range []struct {
		name        string
		size, osize int64
	}{
		{"size 0", 0, 0},
		{"size not a multiple of 512", 1000, 0},
		{"object size not a power of 2", 1 << 20, 3 << 20},
		{"object size too small", 1 << 20, 1024},
		{"object size too large", 1 << 30, 128 << 20},
	} {
		if err := Create(ctx, e.store, e.prefix("bad"), tt.size, tt.osize); err == nil {
			t.Errorf("%s: Create(size %d, object size %d) succeeded, want an error", tt.name, tt.size, tt.osize)
		}
	}
	if r, err := Open(ctx, e.store, p, Options{ReadOnly: true}); err != nil || r.Size() != 1<<20 || r.ObjectSize() != DefaultObjectSize {
		t.Errorf("Open = %v; want size %d, object size %d", err, 1<<20, DefaultObjectSize)
	} else {
		r.Close()
	}
}

// testHostileManifest: a manifest that is not one of ours, or describes
// an impossible disk, is refused with an error, never served.
func testHostileManifest(t *testing.T, e *env) {
	for _, tt := range []struct {
		name, manifest, want string
	}{
		{"not JSON", "\x00\xff garbage", "not valid"},
		{"too large", `{"format":"` + strings.Repeat("x", 5000) + `"}`, "larger than"},
		{"other format", `{"format":"s3backer","version":1,"size":1048576,"object_size":65536}`, "not an nbdloop disk"},
		{"future version", `{"format":"nbdloop-bucket","version":2,"size":1048576,"object_size":65536}`, "version 2"},
		{"unknown field", `{"format":"nbdloop-bucket","version":1,"size":1048576,"object_size":65536,"x":1}`, "unknown field"},
		{"object size 3 MiB", `{"format":"nbdloop-bucket","version":1,"size":1048576,"object_size":3145728}`, "power of 2"},
		{"object size 1 GiB", `{"format":"nbdloop-bucket","version":1,"size":1048576,"object_size":1073741824}`, "power of 2"},
		{"object size negative", `{"format":"nbdloop-bucket","version":1,"size":1048576,"object_size":-65536}`, "power of 2"},
		{"size 0", `{"format":"nbdloop-bucket","version":1,"size":0,"object_size":65536}`, "multiple of 512"},
		{"size odd", `{"format":"nbdloop-bucket","version":1,"size":1000,"object_size":65536}`, "multiple of 512"},
		{"size past 2^63", `{"format":"nbdloop-bucket","version":1,"size":9223372036854775808,"object_size":65536}`, "not valid"},
		{"empty", ``, "not valid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := e.prefix(t.Name())
			e.srv.Put(t, testBucket, p+"manifest", []byte(tt.manifest))
			for _, ro := range []bool{true, false} {
				s, err := Open(context.Background(), e.store, p, Options{ReadOnly: ro})
				if err == nil {
					s.Close()
					t.Fatalf("Open(read-only %v) succeeded, want an error", ro)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("Open(read-only %v): %v, want an error saying %q", ro, err, tt.want)
				}
			}
		})
	}
}

// testHostileChunk: a chunk object of the wrong length fails the read
// with EIO.
func testHostileChunk(t *testing.T, e *env) {
	const cs = 64 << 10
	for _, tt := range []struct {
		name string
		size int
	}{
		{"too long", cs + 1},
		{"short", cs - 1},
		{"empty", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := e.disk(t, 4*cs, cs)
			e.srv.Put(t, testBucket, p+"chunks/0000000000000002", make([]byte, tt.size))
			s := e.open(t, p, Options{ReadOnly: true, Deadline: 5 * time.Second})
			if _, err := s.ReadAt(make([]byte, 512), 2*cs); !isEIO(err) {
				t.Errorf("reading a chunk object of %d bytes: %v, want EIO", tt.size, err)
			}
			if _, err := s.ReadAt(make([]byte, 512), 1*cs); err != nil {
				t.Errorf("reading the chunk before it: %v", err)
			}
		})
	}
}

// testLeaseRefuses: a second writer is refused, naming the first;
// readers are not; after the first closes, the second gets the disk.
func testLeaseRefuses(t *testing.T, e *env) {
	p := e.disk(t, 1<<20, 64<<10)
	first, err := Open(context.Background(), e.store, p, Options{Holder: Holder{Host: "hostA", PID: 4711}, LeaseTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	first.SetDevice("/dev/nbd7")
	_, err = Open(context.Background(), e.store, p, Options{Holder: Holder{Host: "hostB", PID: 1}})
	var held *HeldError
	if !errors.As(err, &held) || held.Holder != (Holder{Host: "hostA", PID: 4711, Device: "/dev/nbd7"}) {
		t.Fatalf("second writer: %v, want a HeldError naming hostA, pid 4711, /dev/nbd7", err)
	}
	if !strings.Contains(err.Error(), `pid 4711 on "hostA" ("/dev/nbd7")`) {
		t.Errorf("refusal %q does not name the holder", err)
	}
	for range 3 {
		e.open(t, p, Options{ReadOnly: true})
	}
	write(t, first, []byte("still mine"), 0)
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	second := e.open(t, p, Options{Holder: Holder{Host: "hostB", PID: 1}})
	if got := read(t, second, 0, 10); string(got) != "still mine" {
		t.Errorf("second writer reads %q, want %q", got, "still mine")
	}
}

// testLeaseExpires: the lease of a writer that died can be taken once it
// expires, and not before.
func testLeaseExpires(t *testing.T, e *env) {
	p := e.disk(t, 1<<20, 64<<10)
	const ttl = 3 * time.Second
	dead := e.open(t, p, Options{LeaseTTL: ttl, Holder: Holder{Host: "gone", PID: 2}})
	crash(dead)
	died := time.Now()
	var held *HeldError
	if _, err := Open(context.Background(), e.store, p, Options{}); !errors.As(err, &held) {
		t.Fatalf("Open before the lease expires: %v, want a HeldError", err)
	}
	for {
		s, err := Open(context.Background(), e.store, p, Options{})
		if err == nil {
			s.Close()
			if waited := time.Since(died); waited < ttl/2 {
				t.Errorf("lease taken over %v after its holder died, before its TTL %v", waited, ttl)
			}
			return
		}
		if !errors.As(err, &held) || time.Since(died) > 4*ttl {
			t.Fatalf("Open %v after the holder died: %v, want success once the lease expired", time.Since(died), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testLeaseLost: a writer whose lease another took fails every request
// with EIO and stores nothing more.
func testLeaseLost(t *testing.T, e *env) {
	const cs = 64 << 10
	p := e.disk(t, 4*cs, cs)
	s := e.open(t, p, Options{LeaseTTL: 3 * time.Second, Holder: Holder{Host: "loser", PID: 3}})
	write(t, s, []byte("before"), 0)
	flush(t, s)
	e.srv.Put(t, testBucket, p+"lease", []byte(`{"host":"thief","pid":9,"token":"x","expires":99999999999999}`))
	// The writer learns of it at its next renewal (a third of the TTL).
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.ReadAt(make([]byte, 6), 0)
		if isEIO(err) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("after the lease was taken: ReadAt = %v, want EIO within 10 s", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := s.WriteAt([]byte("after!"), 0); !isEIO(err) {
		t.Errorf("WriteAt after the lease was lost: %v, want EIO", err)
	}
	if err := s.Flush(); !isEIO(err) {
		t.Errorf("Flush after the lease was lost: %v, want EIO", err)
	}
	if got := e.srv.Get(t, testBucket, p+"chunks/0000000000000000"); string(got[:6]) != "before" {
		t.Errorf("chunk 0 holds %q after the lease was lost, want %q (what was flushed)", got[:6], "before")
	}
	s.Close()
	if got := e.srv.Get(t, testBucket, p+"lease"); !bytes.Contains(got, []byte("thief")) {
		t.Errorf("Close of a writer that lost its lease rewrote the lease: %s", got)
	}
}

// testServerRestart: writes made while the server is down are stored once
// it is back, and a Flush that cannot finish fails with EIO in time.
func testServerRestart(t *testing.T, e *env) {
	const cs = 64 << 10
	p := e.disk(t, 16*cs, cs)
	s := e.open(t, p, Options{Deadline: 3 * time.Second})
	data := bytes.Repeat([]byte("restart."), 4*cs/8)
	write(t, s, data, 0)
	flush(t, s)
	e.srv.Kill(t)
	write(t, s, bytes.Repeat([]byte("down...."), cs/8), 5*cs) // in the cache
	start := time.Now()
	if err := s.Flush(); !isEIO(err) {
		t.Errorf("Flush with the server down: %v, want EIO", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Flush with the server down took %v, want about the 3 s deadline", d)
	}
	e.srv.Restart(t)
	deadline := time.Now().Add(time.Minute)
	for err := s.Flush(); err != nil; err = s.Flush() {
		if time.Now().After(deadline) {
			t.Fatalf("Flush after the server restarted: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r := e.open(t, p, Options{ReadOnly: true})
	if !bytes.Equal(read(t, r, 0, 4*cs), data) || !bytes.Equal(read(t, r, 5*cs, cs), bytes.Repeat([]byte("down...."), cs/8)) {
		t.Errorf("after a restart the disk does not hold what was flushed")
	}
}

// conns is a Store reached through a few connections, as an HTTP client's
// are: every call holds one of slots while it runs, and a chunk upload
// holds it for delay more (a slow link). It counts the uploads cancelled.
type conns struct {
	Store
	slots     chan struct{}
	delay     time.Duration
	cancelled atomic.Int32
}

func newConns(st Store, n int, delay time.Duration) *conns {
	return &conns{Store: st, slots: make(chan struct{}, n), delay: delay}
}

func (c *conns) take(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *conns) Get(ctx context.Context, key string, p []byte) (int, string, error) {
	if err := c.take(ctx); err != nil {
		return 0, "", err
	}
	defer func() { <-c.slots }()
	return c.Store.Get(ctx, key, p)
}

func (c *conns) Put(ctx context.Context, key string, data []byte, cond Cond) (string, error) {
	if err := c.take(ctx); err != nil {
		return "", err
	}
	defer func() { <-c.slots }()
	if strings.Contains(key, "/chunks/") {
		select {
		case <-time.After(c.delay):
		case <-ctx.Done():
			c.cancelled.Add(1)
			return "", ctx.Err()
		}
	}
	return c.Store.Put(ctx, key, data, cond)
}

// testLeaseOwnConnections: with a lease store of its own, renewals do not
// wait behind uploads that hold every connection of the disk's store for
// longer than the lease lasts unrenewed: the lease never lapses, so no
// upload is cancelled and the Flush takes only the uploads' time.
func testLeaseOwnConnections(t *testing.T, e *env) {
	const cs = 64 << 10
	const ttl, delay = 1200 * time.Millisecond, 1500 * time.Millisecond
	p := e.disk(t, 8*cs, cs)
	data := newConns(e.store, 2, delay)
	s, err := Open(context.Background(), data, p, Options{CacheSize: 8 * cs, Parallel: 2, LeaseTTL: ttl, LeaseStore: newConns(e.store, 1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range int64(6) {
		write(t, s, bytes.Repeat([]byte{byte(i + 1)}, cs), i*cs)
	}
	start := time.Now()
	flush(t, s)
	if n := data.cancelled.Load(); n != 0 {
		t.Errorf("%d uploads were cancelled: the lease lapsed while uploads held the store's connections", n)
	}
	if d := time.Since(start); d > 3*delay+2*time.Second {
		t.Errorf("Flush of 6 chunks, 2 at a time, %v each, took %v", delay, d)
	}
	if ok, _ := s.lease.valid(); !ok {
		t.Errorf("the lease is not valid after the uploads")
	}
}
