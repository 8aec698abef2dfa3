package nbd

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/internal/request"
)

// lendingSource is a fakeSource that lends its bytes in pieces of 256 KiB
// (as a block cache does) and counts its loans; with scribble each loan
// lends a copy of its own, overwritten once given back, so that a reply
// written after its release shows wrong bytes.
type lendingSource struct {
	*fakeSource
	orig   []byte // the bytes replies must carry
	failAt int64  // a Lend that covers this offset fails with EIO (-1: none)
	// scribble: loans lend copies, overwritten when given back.
	scribble bool
	mu       sync.Mutex
	out      int // loans not given back
	lends    int
	free     []*lendLoan
}

type lendLoan struct {
	s       *lendingSource
	bufs    [][]byte
	own     []byte // with scribble: the loan's own copy of the bytes
	release func()
}

func newLendingSource(size int) *lendingSource {
	f := newFake(size)
	f.caps.ReadOnly = true
	return &lendingSource{fakeSource: f, orig: bytes.Clone(f.data), failAt: -1, scribble: true}
}

func (s *lendingSource) Lend(off, n int64) ([][]byte, func(), error) {
	if s.failAt >= off && s.failAt < off+n {
		return nil, nil, syscall.EIO
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var l *lendLoan
	if k := len(s.free); k > 0 {
		l, s.free = s.free[k-1], s.free[:k-1]
	} else {
		l = &lendLoan{s: s}
		l.release = l.giveBack
	}
	from, base := s.data, off
	if s.scribble {
		l.own = append(l.own[:0], s.orig[off:off+n]...)
		from, base = l.own, 0
	}
	for p := off; p < off+n; {
		k := min(off+n-p, 256<<10-p%(256<<10))
		l.bufs = append(l.bufs, from[p-off+base:p-off+base+k])
		p += k
	}
	s.out++
	s.lends++
	return l.bufs, l.release, nil
}

// giveBack scribbles over the lent bytes (a cache reusing its block).
func (l *lendLoan) giveBack() {
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.scribble {
		for i := range l.own {
			l.own[i] = ^l.own[i]
		}
	}
	l.bufs = l.bufs[:0]
	s.out--
	s.free = append(s.free, l)
}

// TestServerLend: READs larger than inlineMax from a lending source are
// written from the lent bytes and carry the right ones (the loan is given
// back only once they are written); smaller ones are copied; a failed
// Lend fails its READ; every loan is given back.
func TestServerLend(t *testing.T) {
	src := newLendingSource(8 << 20)
	src.failAt = 7 << 20
	h := serve(t, src, Options{})
	type want struct{ off, n int }
	wants := map[uint64]want{}
	dataLen := map[uint64]int{}
	rng := rand.New(rand.NewPCG(5, 6))
	large := 0
	for i := range 64 {
		cookie := uint64(i + 1)
		n := []int{1 << 20, 4096, inlineMax + 512, 3 << 20, 512}[i%5]
		off := rng.IntN(7<<20-n) &^ 511
		if i == 63 {
			off, n = 7<<20-4096, 1<<20 // over failAt
		} else if n > inlineMax {
			large++
		}
		h.send(RequestHeader{Op: request.OpRead, Cookie: cookie, Offset: uint64(off), Length: uint64(n)}, nil)
		wants[cookie], dataLen[cookie] = want{off, n}, n
	}
	for range wants {
		r, got := h.recv(dataLen)
		w, ok := wants[r.Cookie]
		if !ok {
			t.Fatalf("reply %+v: unknown cookie", r)
		}
		delete(wants, r.Cookie)
		if r.Cookie == 64 {
			if r.Error != errIO {
				t.Errorf("READ over a failing Lend: error %d, want EIO (%d)", r.Error, errIO)
			}
			continue
		}
		if r.Error != 0 {
			t.Fatalf("READ of %d bytes at %d: error %d", w.n, w.off, r.Error)
		}
		if !bytes.Equal(got, src.orig[w.off:w.off+w.n]) {
			t.Errorf("READ of %d bytes at %d: wrong bytes", w.n, w.off)
		}
	}
	h.client.Close()
	if err := h.wait(); err != nil {
		t.Errorf("Serve = %v", err)
	}
	if src.lends != large || src.out != 0 {
		t.Errorf("%d loans, %d not given back; want %d, 0", src.lends, src.out, large)
	}
}

// BenchmarkServerLend1M: 1 MiB READs written from lent bytes; nothing is
// allocated per request.
func BenchmarkServerLend1M(b *testing.B) {
	src := newLendingSource(64 << 20)
	src.scribble = false
	benchmarkSource(b, src, request.OpRead, 1<<20, Options{})
}
