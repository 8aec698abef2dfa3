package bucket

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// nullStore keeps the small objects (manifest, lease) and drops the
// chunks' bytes, so that a benchmark measures the write-back path, not a
// server.
type nullStore struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func (n *nullStore) Get(ctx context.Context, key string, p []byte) (int, string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, ok := n.objs[key]
	if !ok {
		return 0, "", ErrNotFound
	}
	if len(b) > len(p) {
		return 0, "", ErrTooLarge
	}
	return copy(p, b), "etag", nil
}

func (n *nullStore) Put(ctx context.Context, key string, data []byte, cond Cond) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if strings.Contains(key, "chunks/") {
		n.objs[key] = nil
		return "etag", nil
	}
	if _, ok := n.objs[key]; ok && cond.IfNoneMatch {
		return "", ErrPrecondition
	}
	n.objs[key] = append([]byte(nil), data...)
	return "etag", nil
}

func (n *nullStore) Delete(ctx context.Context, key string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.objs, key)
	return nil
}

func (n *nullStore) List(ctx context.Context, prefix string, fn func(string) bool) error {
	return nil
}

// BenchmarkWriteBack writes 64 MiB sequentially in 1 MiB writes, eight
// at a time (fio's write-1m-qd8), then flushes, into a disk of 4 MiB
// chunks whose store drops what it is given.
func BenchmarkWriteBack(b *testing.B) {
	const size, span, bs = 1 << 40, 64 << 20, 1 << 20 // never written twice
	store := &nullStore{objs: map[string][]byte{}}
	if err := Create(context.Background(), store, "", size, 0); err != nil {
		b.Fatal(err)
	}
	s, err := Open(context.Background(), store, "", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var base int64
	b.SetBytes(span)
	for b.Loop() {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, bs)
				p[0] = 1
				for {
					o := next.Add(bs) - bs
					if o >= span {
						return
					}
					if _, err := s.WriteAt(p, (base+o)%size); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
		base += span
	}
}

// gated is a Store whose first chunk upload waits, once it has started,
// until release is closed; it records the bytes that upload was given,
// as it began (first) and as it ended (last).
type gated struct {
	Store
	once        sync.Once
	entered     chan struct{}
	release     chan struct{}
	first, last []byte
}

func (g *gated) Put(ctx context.Context, key string, data []byte, cond Cond) (string, error) {
	if strings.Contains(key, "/chunks/") {
		g.once.Do(func() {
			g.first = bytes.Clone(data)
			close(g.entered)
			<-g.release
			g.last = bytes.Clone(data)
		})
	}
	return g.Store.Put(ctx, key, data, cond)
}

// testWriteDuringUpload: writes to a chunk while it is being uploaded
// change neither the bytes being uploaded nor what a read sees, and the
// next upload stores them.
func testWriteDuringUpload(t *testing.T, e *env) {
	const cs = 64 << 10
	p := e.disk(t, 4*cs, cs)
	g := &gated{Store: e.store, entered: make(chan struct{}), release: make(chan struct{})}
	s, err := Open(context.Background(), g, p, Options{CacheSize: 4 * cs, Parallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := bytes.Repeat([]byte{0xaa}, cs)
	write(t, s, want, 0)
	flushed := make(chan error, 1)
	go func() { flushed <- s.Flush() }()
	<-g.entered
	write(t, s, bytes.Repeat([]byte{0xbb}, 4096), 100)
	if err := s.Zero(8192, 4096, false); err != nil {
		t.Fatal(err)
	}
	write(t, s, bytes.Repeat([]byte{0xcc}, cs), cs) // another chunk, whole
	close(g.release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.first, want) || !bytes.Equal(g.last, want) {
		t.Errorf("the upload in flight was given the chunk as written before it, but its bytes changed while it ran")
	}
	copy(want[100:], bytes.Repeat([]byte{0xbb}, 4096))
	clear(want[8192 : 8192+4096])
	if got := read(t, s, 0, cs); !bytes.Equal(got, want) {
		t.Errorf("read after the writes during the upload: not what was written")
	}
	flush(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := e.open(t, p, Options{ReadOnly: true})
	if got := read(t, r, 0, cs); !bytes.Equal(got, want) {
		t.Errorf("the stored chunk is not the last one written")
	}
	if got := read(t, r, cs, cs); !bytes.Equal(got, bytes.Repeat([]byte{0xcc}, cs)) {
		t.Errorf("the chunk written whole during the upload is not stored")
	}
}

// slow is a Store whose chunk uploads take delay each.
type slow struct {
	Store
	delay time.Duration
}

func (s *slow) Put(ctx context.Context, key string, data []byte, cond Cond) (string, error) {
	if strings.Contains(key, "/chunks/") {
		time.Sleep(s.delay)
	}
	return s.Store.Put(ctx, key, data, cond)
}

// testThrottle: writes wait while more chunks are dirty than the store
// takes in the flush budget at its pace, so that a Flush after a burst of
// writes into a large cache returns within about that budget.
func testThrottle(t *testing.T, e *env) {
	const cs = 64 << 10
	const delay, budget = 250 * time.Millisecond, time.Second
	p := e.disk(t, 32*cs, cs)
	s, err := Open(context.Background(), &slow{Store: e.store, delay: delay}, p, Options{CacheSize: 32 * cs, Parallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.mu.Lock()
	s.budget = budget
	s.mu.Unlock()
	most := 0
	for i := range int64(16) {
		write(t, s, bytes.Repeat([]byte{byte(i + 1)}, cs), i*cs)
		s.mu.Lock()
		most = max(most, s.cache.dirty)
		s.mu.Unlock()
	}
	// budget/delay chunks, plus the one written while an upload ended.
	if want := int(budget/delay) + 1; most > want {
		t.Errorf("%d chunks were dirty at once, want at most %d (what the store takes in %v)", most, want, budget)
	}
	start := time.Now()
	flush(t, s)
	if d := time.Since(start); d > budget+4*delay {
		t.Errorf("Flush after the writes took %v, want about %v at most", d, budget)
	}
	for i := range int64(16) {
		if got := read(t, s, i*cs, cs); !bytes.Equal(got, bytes.Repeat([]byte{byte(i + 1)}, cs)) {
			t.Fatalf("chunk %d does not read back as written", i)
		}
	}
}
