package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// fakeSource is a byte slice with hooks, so tests can fail, block and count
// calls.
type fakeSource struct {
	mu      sync.Mutex
	data    []byte
	caps    sources.Caps
	flushes int
	trims   [][2]int64
	zeros   []zeroCall
	readErr error
	// gate, when set, blocks ReadAt at gateOff until the channel is closed.
	gate    chan struct{}
	gateOff int64
}

type zeroCall struct {
	off, n  int64
	mayTrim bool
}

func newFake(size int) *fakeSource {
	d := make([]byte, size)
	for i := range d {
		d[i] = byte(i * 7)
	}
	return &fakeSource{data: d, caps: sources.Caps{Flush: true, Trim: true, Zero: true, Parallel: true}}
}

func (f *fakeSource) Size() int64        { return int64(len(f.data)) }
func (f *fakeSource) Caps() sources.Caps { return f.caps }
func (f *fakeSource) Close() error       { return nil }

func (f *fakeSource) ReadAt(p []byte, off int64) (int, error) {
	if f.gate != nil && off == f.gateOff {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readErr != nil {
		return 0, f.readErr
	}
	return copy(p, f.data[off:]), nil
}

func (f *fakeSource) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off == 4096*3 {
		return 0, fmt.Errorf("fake: disk full: %w", syscall.ENOSPC)
	}
	return copy(f.data[off:], p), nil
}

func (f *fakeSource) Flush() error {
	f.mu.Lock()
	f.flushes++
	f.mu.Unlock()
	return nil
}

func (f *fakeSource) Trim(off, n int64) error {
	f.mu.Lock()
	f.trims = append(f.trims, [2]int64{off, n})
	f.mu.Unlock()
	return nil
}

func (f *fakeSource) Zero(off, n int64, mayTrim bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.zeros = append(f.zeros, zeroCall{off, n, mayTrim})
	clear(f.data[off : off+n])
	return nil
}

// socketpair returns the client end as a *os.File and the server end as a
// net.Conn, as nbdloop does with the kernel.
func socketpair(t testing.TB) (client *os.File, server net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	client = os.NewFile(uintptr(fds[0]), "client")
	sf := os.NewFile(uintptr(fds[1]), "server")
	server, err = net.FileConn(sf)
	sf.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

type harness struct {
	t      testing.TB
	client *os.File
	done   chan error
	cancel context.CancelFunc
}

func serve(t testing.TB, src sources.Source, opts Options) *harness {
	t.Helper()
	client, server := socketpair(t)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, client: client, done: make(chan error, 1), cancel: cancel}
	srv := NewServer(src, opts)
	go func() { h.done <- srv.Serve(ctx, server) }()
	t.Cleanup(cancel)
	return h
}

// TestServerDisconnected: DISC marks the server as detached; a connection
// that merely closes does not, which is how a supervisor tells a detach from
// connections the kernel dropped.
func TestServerDisconnected(t *testing.T) {
	for _, disc := range []bool{false, true} {
		client, server := socketpair(t)
		srv := NewServer(newFake(4096), Options{})
		done := make(chan error, 1)
		go func() { done <- srv.Serve(context.Background(), server) }()
		if disc {
			b := make([]byte, RequestSize)
			PutRequest(b, RequestHeader{Op: request.OpDisc})
			client.Write(b)
		}
		client.Close()
		if err := <-done; err != nil {
			t.Errorf("disc=%v: Serve = %v, want nil", disc, err)
		}
		if srv.Disconnected() != disc {
			t.Errorf("Disconnected() = %v after a connection that %s, want %v", srv.Disconnected(),
				map[bool]string{false: "closed", true: "sent DISC"}[disc], disc)
		}
	}
}

func (h *harness) send(r RequestHeader, payload []byte) {
	h.t.Helper()
	b := make([]byte, RequestSize+len(payload))
	PutRequest(b, r)
	copy(b[RequestSize:], payload)
	if _, err := h.client.Write(b); err != nil {
		h.t.Fatalf("sending %v: %v", r.Op, err)
	}
}

// recv reads one reply; dataLen is the payload length expected after a
// successful READ with that cookie.
func (h *harness) recv(dataLen map[uint64]int) (Reply, []byte) {
	h.t.Helper()
	var hdr [ReplySize]byte
	if _, err := io.ReadFull(h.client, hdr[:]); err != nil {
		h.t.Fatalf("reading reply: %v", err)
	}
	r, err := ParseReply(hdr[:])
	if err != nil {
		h.t.Fatal(err)
	}
	var data []byte
	if n := dataLen[r.Cookie]; n > 0 && r.Error == 0 {
		data = make([]byte, n)
		if _, err := io.ReadFull(h.client, data); err != nil {
			h.t.Fatalf("reading reply data: %v", err)
		}
	}
	return r, data
}

func (h *harness) wait() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("Serve did not return")
		return nil
	}
}

func TestServerRequests(t *testing.T) {
	tests := []struct {
		name    string
		req     RequestHeader
		payload []byte
		wantErr uint32
		check   func(t *testing.T, f *fakeSource, data []byte)
	}{
		{
			name: "read",
			req:  RequestHeader{Op: request.OpRead, Offset: 512, Length: 1024},
			check: func(t *testing.T, f *fakeSource, data []byte) {
				if !bytes.Equal(data, f.data[512:1536]) {
					t.Errorf("read data differs from the source")
				}
			},
		},
		{
			name:    "write",
			req:     RequestHeader{Op: request.OpWrite, Offset: 4096, Length: 3},
			payload: []byte{1, 2, 3},
			check: func(t *testing.T, f *fakeSource, _ []byte) {
				if got := f.data[4096:4099]; !bytes.Equal(got, []byte{1, 2, 3}) {
					t.Errorf("data after write = %v, want [1 2 3]", got)
				}
				if f.flushes != 0 {
					t.Errorf("flushes = %d, want 0 without FUA", f.flushes)
				}
			},
		},
		{
			name:    "write FUA flushes",
			req:     RequestHeader{Op: request.OpWrite, Flags: request.FlagFUA, Offset: 0, Length: 4},
			payload: []byte{9, 9, 9, 9},
			check: func(t *testing.T, f *fakeSource, _ []byte) {
				if f.flushes != 1 {
					t.Errorf("flushes = %d, want 1", f.flushes)
				}
			},
		},
		{
			name:    "write error becomes ENOSPC reply",
			req:     RequestHeader{Op: request.OpWrite, Offset: 4096 * 3, Length: 4},
			payload: []byte{1, 1, 1, 1},
			wantErr: errNoSpc,
		},
		{
			name: "flush",
			req:  RequestHeader{Op: request.OpFlush},
			check: func(t *testing.T, f *fakeSource, _ []byte) {
				if f.flushes != 1 {
					t.Errorf("flushes = %d, want 1", f.flushes)
				}
			},
		},
		{
			name: "trim",
			req:  RequestHeader{Op: request.OpTrim, Offset: 8192, Length: 4096},
			check: func(t *testing.T, f *fakeSource, _ []byte) {
				if len(f.trims) != 1 || f.trims[0] != [2]int64{8192, 4096} {
					t.Errorf("trims = %v, want [[8192 4096]]", f.trims)
				}
			},
		},
		{
			name: "write zeroes may punch holes",
			req:  RequestHeader{Op: request.OpZero, Offset: 0, Length: 4096},
			check: func(t *testing.T, f *fakeSource, _ []byte) {
				if len(f.zeros) != 1 || f.zeros[0] != (zeroCall{0, 4096, true}) {
					t.Errorf("zeros = %v, want [{0 4096 true}]", f.zeros)
				}
			},
		},
		{
			name: "write zeroes with NO_HOLE",
			req:  RequestHeader{Op: request.OpZero, Flags: request.FlagNoHole, Offset: 512, Length: 512},
			check: func(t *testing.T, f *fakeSource, _ []byte) {
				if len(f.zeros) != 1 || f.zeros[0] != (zeroCall{512, 512, false}) {
					t.Errorf("zeros = %v, want [{512 512 false}]", f.zeros)
				}
			},
		},
		{name: "read past the end", req: RequestHeader{Op: request.OpRead, Offset: 65536 - 512, Length: 1024}, wantErr: errInval},
		{name: "read at huge offset", req: RequestHeader{Op: request.OpRead, Offset: 1 << 63, Length: 512}, wantErr: errInval},
		{name: "write past the end", req: RequestHeader{Op: request.OpWrite, Offset: 65536, Length: 2}, payload: []byte{1, 2}, wantErr: errInval},
		{name: "trim past the end", req: RequestHeader{Op: request.OpTrim, Offset: 0, Length: 65537}, wantErr: errInval},
		{name: "unknown command", req: RequestHeader{Op: 42}, wantErr: errInval},
		{name: "zero-length read", req: RequestHeader{Op: request.OpRead, Offset: 65536, Length: 0}},
	}
	for _, tt := range tests {
		forEachMode(t, tt.name, 65536, func(t *testing.T, f *fakeSource) {
			h := serve(t, f, Options{})
			tt.req.Cookie = 0xdeadbeef00000001
			h.send(tt.req, tt.payload)
			r, data := h.recv(map[uint64]int{tt.req.Cookie: int(tt.req.Length) * boolInt(tt.req.Op == request.OpRead)})
			if r.Cookie != tt.req.Cookie {
				t.Errorf("reply cookie = %#x, want %#x", r.Cookie, tt.req.Cookie)
			}
			if r.Error != tt.wantErr {
				t.Errorf("reply error = %d, want %d", r.Error, tt.wantErr)
			}
			// The connection must survive error replies.
			h.send(RequestHeader{Op: request.OpRead, Cookie: 7, Length: 1}, nil)
			if r, _ := h.recv(map[uint64]int{7: 1}); r.Cookie != 7 || r.Error != 0 {
				t.Errorf("read after %s: reply %+v, want cookie 7 error 0", tt.name, r)
			}
			h.send(RequestHeader{Op: request.OpDisc}, nil)
			if err := h.wait(); err != nil {
				t.Errorf("Serve after DISC = %v, want nil", err)
			}
			if tt.check != nil {
				tt.check(t, f, data)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestServerReadOnlyRefusesWrites(t *testing.T) {
	f := newFake(65536)
	f.caps.ReadOnly = true
	h := serve(t, f, Options{})
	orig := bytes.Clone(f.data)
	h.send(RequestHeader{Op: request.OpWrite, Cookie: 1, Length: 4}, []byte{1, 2, 3, 4})
	h.send(RequestHeader{Op: request.OpTrim, Cookie: 2, Length: 4096}, nil)
	h.send(RequestHeader{Op: request.OpZero, Cookie: 3, Length: 4096}, nil)
	for i := 0; i < 3; i++ {
		if r, _ := h.recv(nil); r.Error != errPerm {
			t.Errorf("reply %d error = %d, want EPERM (%d)", r.Cookie, r.Error, errPerm)
		}
	}
	if !bytes.Equal(f.data, orig) {
		t.Error("read-only source was modified")
	}
}

func TestServerReadErrorIsReplyNotDisconnect(t *testing.T) {
	f := newFake(65536)
	f.readErr = fmt.Errorf("fake: medium error: %w", syscall.EIO)
	h := serve(t, f, Options{})
	h.send(RequestHeader{Op: request.OpRead, Cookie: 1, Length: 4096}, nil)
	r, _ := h.recv(nil)
	if r.Error != errIO {
		t.Fatalf("read error reply = %d, want EIO", r.Error)
	}
	// An error reply carries no payload: the next frame must be a header.
	h.send(RequestHeader{Op: request.OpFlush, Cookie: 2}, nil)
	if r, _ := h.recv(nil); r.Cookie != 2 {
		t.Fatalf("next reply cookie = %d, want 2 (stream out of sync)", r.Cookie)
	}
}

func TestServerRepliesOutOfOrder(t *testing.T) {
	f := newFake(1 << 20)
	f.gate = make(chan struct{})
	f.gateOff = 0
	h := serve(t, f, Options{Workers: 4})
	h.send(RequestHeader{Op: request.OpRead, Cookie: 1, Offset: 0, Length: 4096}, nil)    // blocks
	h.send(RequestHeader{Op: request.OpRead, Cookie: 2, Offset: 8192, Length: 4096}, nil) // completes first
	lens := map[uint64]int{1: 4096, 2: 4096}
	r, data := h.recv(lens)
	if r.Cookie != 2 {
		t.Fatalf("first reply cookie = %d, want 2", r.Cookie)
	}
	if !bytes.Equal(data, f.data[8192:8192+4096]) {
		t.Error("reply 2 data differs")
	}
	close(f.gate)
	r, data = h.recv(lens)
	if r.Cookie != 1 || !bytes.Equal(data, f.data[:4096]) {
		t.Errorf("second reply cookie = %d, want 1 with the right data", r.Cookie)
	}
}

func TestServerManyInFlight(t *testing.T) {
	forEachMode(t, "", 8<<20, testServerManyInFlight)
}

func testServerManyInFlight(t *testing.T, f *fakeSource) {
	h := serve(t, f, Options{})
	// 128 requests in flight, as the kernel's queue depth allows; the
	// writer runs concurrently so a full socket buffer cannot deadlock.
	const n = 128
	lens := map[uint64]int{}
	for i := 0; i < n; i++ {
		lens[uint64(i)] = 64 << 10
	}
	go func() {
		for i := 0; i < n; i++ {
			h.send(RequestHeader{Op: request.OpRead, Cookie: uint64(i), Offset: uint64(i) * (64 << 10), Length: 64 << 10}, nil)
		}
	}()
	seen := map[uint64]bool{}
	for i := 0; i < n; i++ {
		r, data := h.recv(lens)
		if r.Error != 0 || seen[r.Cookie] {
			t.Fatalf("reply %+v: duplicate or error", r)
		}
		seen[r.Cookie] = true
		off := int(r.Cookie) * (64 << 10)
		if !bytes.Equal(data, f.data[off:off+64<<10]) {
			t.Fatalf("reply %d: wrong data", r.Cookie)
		}
	}
}

func TestServer32MiB(t *testing.T) {
	forEachMode(t, "", 40<<20, testServer32MiB)
}

func testServer32MiB(t *testing.T, f *fakeSource) {
	h := serve(t, f, Options{})
	payload := bytes.Repeat([]byte{0xa5}, MaxPayload)
	go h.send(RequestHeader{Op: request.OpWrite, Cookie: 1, Offset: 4096, Length: MaxPayload}, payload)
	if r, _ := h.recv(nil); r.Error != 0 {
		t.Fatalf("32 MiB write: error %d", r.Error)
	}
	h.send(RequestHeader{Op: request.OpRead, Cookie: 2, Offset: 4096, Length: MaxPayload}, nil)
	r, data := h.recv(map[uint64]int{2: MaxPayload})
	if r.Error != 0 || !bytes.Equal(data, payload) {
		t.Fatalf("32 MiB read back: error %d, equal %v", r.Error, bytes.Equal(data, payload))
	}
}

func TestServerProtocolErrors(t *testing.T) {
	tests := []struct {
		name string
		raw  func() []byte
	}{
		{"bad magic", func() []byte {
			b := make([]byte, RequestSize)
			PutRequest(b, RequestHeader{Op: request.OpRead, Length: 512})
			b[0] ^= 0xff
			return b
		}},
		{"write over 32 MiB", func() []byte {
			b := make([]byte, RequestSize)
			PutRequest(b, RequestHeader{Op: request.OpWrite, Length: MaxPayload + 1})
			return b
		}},
		{"read over 32 MiB", func() []byte {
			b := make([]byte, RequestSize)
			PutRequest(b, RequestHeader{Op: request.OpRead, Length: 0xffffffff})
			return b
		}},
		{"truncated header", func() []byte { return []byte{0x25, 0x60, 0x95} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logged []string
			var mu sync.Mutex
			h := serve(t, newFake(65536), Options{Logf: func(f string, a ...any) {
				mu.Lock()
				logged = append(logged, fmt.Sprintf(f, a...))
				mu.Unlock()
			}})
			if _, err := h.client.Write(tt.raw()); err != nil {
				t.Fatal(err)
			}
			if tt.name == "truncated header" {
				unix.Shutdown(int(h.client.Fd()), unix.SHUT_WR)
			}
			err := h.wait()
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("Serve = %v, want an ErrProtocol", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(logged) == 0 {
				t.Error("protocol error was not logged")
			}
		})
	}
}

func TestServerEOFIsCleanAndCancelStops(t *testing.T) {
	forEachMode(t, "", 4096, func(t *testing.T, f *fakeSource) {
		h := serve(t, f, Options{})
		h.client.Close()
		if err := h.wait(); err != nil {
			t.Errorf("Serve after EOF = %v, want nil", err)
		}
		h = serve(t, f, Options{})
		h.cancel()
		if err := h.wait(); !errors.Is(err, context.Canceled) {
			t.Errorf("Serve after cancel = %v, want context.Canceled", err)
		}
	})
}

// forEachMode runs test twice, as a subtest named name (or "workers" /
// "inline" when name is empty), on a fake source of size bytes: served by
// worker goroutines and, InMemory, by the reading goroutine itself.
func forEachMode(t *testing.T, name string, size int, test func(t *testing.T, f *fakeSource)) {
	for _, inMemory := range []bool{false, true} {
		mode := "workers"
		if inMemory {
			mode = "inline"
		}
		if name != "" {
			mode = name + "/" + mode
		}
		t.Run(mode, func(t *testing.T) {
			f := newFake(size)
			f.caps.InMemory = inMemory
			test(t, f)
		})
	}
}

// TestServerInlineInOrder: an InMemory source's requests are served one
// after the other by the reading goroutine, so a slow first request delays
// the rest and the replies leave in request order (with workers, the others
// would overtake it).
func TestServerInlineInOrder(t *testing.T) {
	f := newFake(1 << 20)
	f.caps.InMemory = true
	f.gate, f.gateOff = make(chan struct{}), 0
	time.AfterFunc(50*time.Millisecond, func() { close(f.gate) })
	h := serve(t, f, Options{})
	const n = 32
	frames := make([]byte, n*RequestSize)
	lens := map[uint64]int{}
	for i := 0; i < n; i++ {
		PutRequest(frames[i*RequestSize:], RequestHeader{Op: request.OpRead, Cookie: uint64(i), Offset: uint64(i) * 4096, Length: 4096})
		lens[uint64(i)] = 4096
	}
	if _, err := h.client.Write(frames); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r, data := h.recv(lens)
		if r.Cookie != uint64(i) || r.Error != 0 || !bytes.Equal(data, f.data[i*4096:(i+1)*4096]) {
			t.Fatalf("reply %d: cookie %d, error %d, data equal %v; want cookie %d and the source's data", i, r.Cookie, r.Error, bytes.Equal(data, f.data[i*4096:(i+1)*4096]), i)
		}
	}
}

// serialSource fails the test if two calls overlap.
type serialSource struct {
	*fakeSource
	busy sync.Mutex
	t    *testing.T
}

func (s *serialSource) ReadAt(p []byte, off int64) (int, error) {
	if !s.busy.TryLock() {
		s.t.Error("non-parallel source called concurrently")
		return 0, syscall.EIO
	}
	defer s.busy.Unlock()
	time.Sleep(time.Millisecond)
	return s.fakeSource.ReadAt(p, off)
}

func TestServerSerializesNonParallelSources(t *testing.T) {
	f := newFake(1 << 20)
	f.caps.Parallel = false
	h := serve(t, &serialSource{fakeSource: f, t: t}, Options{Workers: 8})
	lens := map[uint64]int{}
	for i := 0; i < 16; i++ {
		lens[uint64(i)] = 512
		h.send(RequestHeader{Op: request.OpRead, Cookie: uint64(i), Offset: uint64(i) * 512, Length: 512}, nil)
	}
	for i := 0; i < 16; i++ {
		if r, _ := h.recv(lens); r.Error != 0 {
			t.Errorf("reply %d error %d", r.Cookie, r.Error)
		}
	}
}

func TestTransmissionFlags(t *testing.T) {
	tests := []struct {
		name  string
		caps  sources.Caps
		multi bool
		want  uint64
	}{
		{"read-only", sources.Caps{ReadOnly: true, Flush: true, Trim: true}, false, FlagHasFlags | FlagReadOnly},
		{"memory", sources.Caps{Trim: true, Zero: true, Parallel: true}, true, FlagHasFlags | FlagSendTrim | FlagSendWriteZeroes | FlagCanMultiConn},
		{"file", sources.Caps{Flush: true, Trim: true, Zero: true}, false, FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes},
		{"rotational", sources.Caps{Rotational: true, ReadOnly: true}, false, FlagHasFlags | FlagReadOnly | FlagRotational},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TransmissionFlags(tt.caps, tt.multi); got != tt.want {
				t.Errorf("TransmissionFlags(%+v, %v) = %#x, want %#x", tt.caps, tt.multi, got, tt.want)
			}
		})
	}
}

func TestErrorCode(t *testing.T) {
	tests := []struct {
		err  error
		want uint32
	}{
		{nil, 0},
		{errors.New("no errno"), errIO},
		{syscall.EPERM, errPerm},
		{sources.ErrReadOnly, errPerm},
		{fmt.Errorf("wrapped: %w", syscall.EROFS), errPerm},
		{&os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}, errNoSpc},
		{syscall.EDQUOT, errNoSpc},
		{syscall.ENOMEM, errNoMem},
		{syscall.EINVAL, errInval},
		{syscall.EOVERFLOW, errOverflow},
		{syscall.EOPNOTSUPP, errNotSup},
		{syscall.ESHUTDOWN, errShutdown},
		{syscall.EBADF, errIO},
		{io.ErrUnexpectedEOF, errIO},
	}
	for _, tt := range tests {
		if got := ErrorCode(tt.err); got != tt.want {
			t.Errorf("ErrorCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
