package bucket

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
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
	const size, span, bs = 1 << 30, 64 << 20, 1 << 20
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
