package nbd

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// noWriteAt is a file in RAM whose WriteAt fails: a WRITE that succeeds
// went into the file by spliceWrite.
type noWriteAt struct{ *sources.File }

var errWriteAt = errors.New("WriteAt called")

func (noWriteAt) WriteAt([]byte, int64) (int, error) { return 0, errWriteAt }

// TestServerSpliceWrite: WRITEs over inlineMax to a file in RAM go from
// the socket into the file without WriteAt (whatever part of the payload
// the reader had taken in already, the rest through the pipe, in one turn
// or several), and read back; smaller ones still go through WriteAt; one
// past the end is refused and its payload consumed.
func TestServerSpliceWrite(t *testing.T) {
	const size = 8 << 20
	f, _ := memfdSource(t, make([]byte, size))
	h := serve(t, noWriteAt{f}, Options{})
	rng := rand.New(rand.NewPCG(7, 8))
	want := make([]byte, size)
	for _, tc := range []struct {
		name   string
		off, n int
		code   uint32
	}{
		{"1 MiB", 0, 1 << 20, 0},
		{"unaligned, just over inlineMax", 12345, inlineMax + 512, 0},
		{"3 MiB, several turns of the pipe", 2<<20 + 4096, 3 << 20, 0},
		{"4 KiB: WriteAt", 6 << 20, 4096, errIO},
		{"past the end", size - 4096, 1 << 20, errInval},
		{"after it, 2 MiB", 6<<20 + 8192, 2<<20 - 8192, 0},
	} {
		payload := make([]byte, tc.n)
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		h.send(RequestHeader{Op: request.OpWrite, Cookie: 1, Offset: uint64(tc.off), Length: uint64(tc.n)}, payload)
		r, _ := h.recv(nil)
		if r.Error != tc.code {
			t.Errorf("%s: WRITE error %d, want %d", tc.name, r.Error, tc.code)
		}
		if r.Error == 0 {
			copy(want[tc.off:], payload)
		}
	}
	// Two WRITEs in one send: the second's header and part of its payload
	// come in with the first.
	a, b := bytes.Repeat([]byte{0xa5}, 200<<10), bytes.Repeat([]byte{0x5a}, 1<<20)
	buf := make([]byte, 2*RequestSize+len(a)+len(b))
	PutRequest(buf, RequestHeader{Op: request.OpWrite, Cookie: 2, Offset: 5 << 20, Length: uint64(len(a))})
	copy(buf[RequestSize:], a)
	PutRequest(buf[RequestSize+len(a):], RequestHeader{Op: request.OpWrite, Cookie: 3, Offset: 7 << 20, Length: uint64(len(b))})
	copy(buf[2*RequestSize+len(a):], b)
	if _, err := h.client.Write(buf); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if r, _ := h.recv(nil); r.Error != 0 {
			t.Errorf("WRITE %d sent with another: error %d", r.Cookie, r.Error)
		}
	}
	copy(want[5<<20:], a)
	copy(want[7<<20:], b)
	got := make([]byte, size)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the file differs from what was written")
	}
	h.client.Close()
	if err := h.wait(); err != nil {
		t.Errorf("Serve = %v", err)
	}
}
