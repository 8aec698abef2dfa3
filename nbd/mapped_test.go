package nbd

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/internal/request"
)

// mappedSource is a fakeSource whose bytes are "mapped": MappedRange lends
// them, except for ranges over refuseAt (a hole), and counts its loans.
type mappedSource struct {
	*fakeSource
	refuseAt int64
	mu       sync.Mutex
	maps     int
}

func (s *mappedSource) MappedRange(off, n int64) ([]byte, bool) {
	if s.refuseAt >= off && s.refuseAt < off+n {
		return nil, false
	}
	s.mu.Lock()
	s.maps++
	s.mu.Unlock()
	return s.data[off : off+n], true
}

// TestServerMapped: on a connection without a socket of its own (TLS),
// READs larger than inlineMax are written from the source's mapping;
// smaller ones, and one MappedRange refuses, are read as any other. On a
// socket the mapping is not used: sendfile serves those sources there.
func TestServerMapped(t *testing.T) {
	for _, socket := range []bool{false, true} {
		src := &mappedSource{fakeSource: newFake(8 << 20), refuseAt: 5 << 20}
		client, server := socketpair(t)
		var rw io.ReadWriter = server
		if !socket {
			rw = struct{ io.ReadWriter }{server}
		}
		h := &harness{t: t, client: client, done: make(chan error, 1), cancel: func() {}}
		go func() { h.done <- NewServer(src, Options{}).Serve(context.Background(), rw) }()
		type want struct{ off, n int }
		wants := map[uint64]want{}
		dataLen := map[uint64]int{}
		rng := rand.New(rand.NewPCG(7, 8))
		large := 0
		for i := range 40 {
			cookie := uint64(i + 1)
			n := []int{1 << 20, 4096, inlineMax + 512, 3 << 20}[i%4]
			off := rng.IntN(8<<20-n) &^ 511
			if i == 39 {
				off, n = 5<<20-4096, 1<<20 // over refuseAt
			} else if n > inlineMax && (off > 5<<20 || off+n <= 5<<20) {
				large++
			}
			h.send(RequestHeader{Op: request.OpRead, Cookie: cookie, Offset: uint64(off), Length: uint64(n)}, nil)
			wants[cookie], dataLen[cookie] = want{off, n}, n
		}
		for range wants {
			r, got := h.recv(dataLen)
			w := wants[r.Cookie]
			if r.Error != 0 {
				t.Fatalf("socket %v: READ of %d bytes at %d: error %d", socket, w.n, w.off, r.Error)
			}
			if !bytes.Equal(got, src.data[w.off:w.off+w.n]) {
				t.Errorf("socket %v: READ of %d bytes at %d: wrong bytes", socket, w.n, w.off)
			}
		}
		client.Close()
		if err := h.wait(); err != nil {
			t.Errorf("socket %v: Serve = %v", socket, err)
		}
		if socket {
			large = 0
		}
		if src.maps != large {
			t.Errorf("socket %v: %d READs from the mapping, want %d", socket, src.maps, large)
		}
	}
}
