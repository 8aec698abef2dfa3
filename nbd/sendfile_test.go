package nbd

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// memfdSource returns a sources.File over a memfd holding data: a source
// in RAM whose large READs are sent with sendfile.
func memfdSource(t testing.TB, data []byte) (*sources.File, *os.File) {
	t.Helper()
	fd, err := unix.MemfdCreate("nbd-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	osf := os.NewFile(uintptr(fd), "memfd")
	if _, err := osf.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	// A second descriptor, for the test to change the file under the source.
	other, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	f, err := sources.NewFile(osf, "memfd", sources.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if !f.Caps().InMemory {
		t.Fatal("a memfd source is not InMemory")
	}
	if _, _, ok := f.RAMRegion(0, int64(len(data))); !ok {
		t.Fatal("a memfd source offers no RAMRegion")
	}
	return f, other
}

// TestServerSendFile: READs larger than inlineMax from a source in RAM go
// out with sendfile, mixed with replies written from buffers (small reads,
// writes), and carry the right bytes.
func TestServerSendFile(t *testing.T) {
	data := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	f, _ := memfdSource(t, data)
	h := serve(t, f, Options{})
	wants := map[uint64]readWant{}
	dataLen := map[uint64]int{}
	cookie := uint64(0)
	for i := 0; i < 64; i++ {
		cookie++
		n := []int{1 << 20, 4096, inlineMax + 512, 3 << 20, 512}[i%5]
		off := rng.IntN(len(data)-n) &^ 511
		h.send(RequestHeader{Op: request.OpRead, Cookie: cookie, Offset: uint64(off), Length: uint64(n)}, nil)
		wants[cookie], dataLen[cookie] = readWant{off, n}, n
		if i%7 == 0 {
			cookie++
			h.send(RequestHeader{Op: request.OpWrite, Cookie: cookie, Offset: uint64(len(data) - 4096), Length: 4096}, data[len(data)-4096:])
			wants[cookie] = readWant{-1, 0}
		}
	}
	checkReplies(t, h, wants, dataLen, data)
	h.client.Close()
	if err := h.wait(); err != nil {
		t.Errorf("Serve = %v", err)
	}
}

// readWant is what a request's reply should carry: the n bytes at off of
// the source's data, or no data when off is -1.
type readWant struct{ off, n int }

// checkReplies reads a reply for each request of wants (dataLen: the data
// length of each READ's reply, by cookie) and checks it succeeded with the
// bytes of data it should carry.
func checkReplies(t *testing.T, h *harness, wants map[uint64]readWant, dataLen map[uint64]int, data []byte) {
	t.Helper()
	for range len(wants) {
		r, got := h.recv(dataLen)
		w, ok := wants[r.Cookie]
		if !ok || r.Error != 0 {
			t.Fatalf("reply %+v: unknown cookie or an error", r)
		}
		delete(wants, r.Cookie)
		if w.off >= 0 && !bytes.Equal(got, data[w.off:w.off+w.n]) {
			t.Errorf("READ of %d bytes at %d: wrong bytes", w.n, w.off)
		}
	}
}

// TestServerSendFileShrunk: when the file ends before a READ's data (it
// was truncated under the source), the success header is already out, so
// the server must not leave the peer waiting for bytes or taking short
// data: it shuts the connection down.
func TestServerSendFileShrunk(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 4<<20)
	f, other := memfdSource(t, data)
	if err := other.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	h := serve(t, f, Options{})
	h.send(RequestHeader{Op: request.OpRead, Cookie: 1, Offset: 0, Length: 2 << 20}, nil)
	b, err := io.ReadAll(h.client)
	if err != nil {
		t.Fatalf("reading until the server shuts down: %v", err)
	}
	if len(b) >= ReplySize+2<<20 {
		t.Fatalf("got a whole %d-byte reply from a file cut to 1 MiB", len(b))
	}
	if err := h.wait(); err != nil {
		t.Logf("Serve = %v", err)
	}
}
