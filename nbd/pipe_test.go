package nbd

import (
	"io"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/request"
)

// pipeSource is a fakeSource that puts the reads of 512 KiB and more at
// offsets that are multiples of 64 KiB into a pipe (PipeRead), the others
// it declines; short leaves the last byte out.
type pipeSource struct {
	*fakeSource
	short              bool
	served, given, bad atomic.Int64
}

func (s *pipeSource) PipeRead(off, n int64) ([]int, func(), bool) {
	if n < 512<<10 || off%(64<<10) != 0 {
		return nil, nil, false
	}
	// The bytes in two pipes: the first holds 64 KiB.
	var a, b [2]int
	if unix.Pipe2(a[:], unix.O_CLOEXEC|unix.O_NONBLOCK) != nil || unix.Pipe2(b[:], unix.O_CLOEXEC|unix.O_NONBLOCK) != nil {
		s.bad.Add(1)
		return nil, nil, false
	}
	if _, err := unix.FcntlInt(uintptr(b[1]), unix.F_SETPIPE_SZ, 1<<20); err != nil {
		s.bad.Add(1)
	}
	d := s.data[off : off+n]
	if s.short {
		d = d[:n-1]
	}
	for i, part := range [][]byte{d[:64<<10], d[64<<10:]} {
		if w, err := unix.Write([][2]int{a, b}[i][1], part); err != nil || w != len(part) {
			s.bad.Add(1)
		}
	}
	s.served.Add(1)
	return []int{a[0], b[0]}, func() {
		s.given.Add(1)
		for _, fd := range []int{a[0], a[1], b[0], b[1]} {
			unix.Close(fd)
		}
	}, true
}

// TestServerPipeRead: READs a source puts into a pipe go out from the pipe,
// mixed with the ones it declines and with writes, with the right bytes;
// every pipe is given back once.
func TestServerPipeRead(t *testing.T) {
	src := &pipeSource{fakeSource: newFake(8 << 20)}
	h := serve(t, src, Options{})
	data := src.data
	wants := map[uint64]readWant{}
	dataLen := map[uint64]int{}
	cookie := uint64(0)
	for i := 0; i < 40; i++ {
		cookie++
		n := []int{1 << 20, 4096, inlineMax + 512, 512 << 10, 1 << 20}[i%5]
		off := (i * 197 << 10) % (len(data) - n) &^ 511
		if i%3 == 0 {
			off &^= 64<<10 - 1
		}
		h.send(RequestHeader{Op: request.OpRead, Cookie: cookie, Offset: uint64(off), Length: uint64(n)}, nil)
		wants[cookie], dataLen[cookie] = readWant{off, n}, n
	}
	checkReplies(t, h, wants, dataLen, data)
	h.client.Close()
	if err := h.wait(); err != nil {
		t.Errorf("Serve = %v", err)
	}
	if src.served.Load() == 0 || src.given.Load() != src.served.Load() || src.bad.Load() != 0 {
		t.Errorf("pipes: %d filled, %d given back, %d failures; want some, all, none", src.served.Load(), src.given.Load(), src.bad.Load())
	}
}

// TestServerPipeShort: a pipe that holds less than the READ is not sent;
// the server shuts the connection down rather than let the peer take
// short data.
func TestServerPipeShort(t *testing.T) {
	src := &pipeSource{fakeSource: newFake(4 << 20), short: true}
	h := serve(t, src, Options{})
	h.send(RequestHeader{Op: request.OpRead, Cookie: 1, Offset: 0, Length: 1 << 20}, nil)
	b, err := io.ReadAll(h.client)
	if err != nil {
		t.Fatalf("reading until the server shuts down: %v", err)
	}
	if len(b) > ReplySize {
		t.Fatalf("got %d bytes of a reply whose pipe held less than its data", len(b))
	}
	h.wait()
	if src.given.Load() != 1 {
		t.Errorf("the pipe was given back %d times, want 1", src.given.Load())
	}
}
