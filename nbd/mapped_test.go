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
// them, except for ranges over refuseAt (a hole), and counts its loans of
// small (up to inlineMax) and large ranges, and calls whose seek does not
// match the range's size (small: false, large: true).
type mappedSource struct {
	*fakeSource
	refuseAt     int64
	mu           sync.Mutex
	small, large int
	badSeek      int
}

func (s *mappedSource) MappedRange(off, n int64, seek bool) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seek != (n > inlineMax) {
		s.badSeek++
	}
	if s.refuseAt >= off && s.refuseAt < off+n {
		return nil, false
	}
	if n > inlineMax {
		s.large++
	} else {
		s.small++
	}
	return s.data[off : off+n], true
}

// TestServerMapped: READs up to inlineMax are written from the source's
// mapping on any connection; larger ones only on a connection without a
// socket of its own (TLS), since sendfile serves such sources on a
// socket. A READ MappedRange refuses (a hole) is read as any other.
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
		small, large := 0, 0
		for i := range 40 {
			cookie := uint64(i + 1)
			n := []int{1 << 20, 4096, inlineMax + 512, 3 << 20, inlineMax}[i%5]
			off := rng.IntN(8<<20-n) &^ 511
			switch {
			case i >= 38:
				off = 5<<20 - 4096 // over refuseAt
			case off <= 5<<20 && off+n > 5<<20:
			case n > inlineMax:
				large++
			default:
				small++
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
		if src.small != small || src.large != large || src.badSeek != 0 {
			t.Errorf("socket %v: %d small and %d large READs from the mapping, %d with the wrong seek; want %d, %d, 0",
				socket, src.small, src.large, src.badSeek, small, large)
		}
	}
}
