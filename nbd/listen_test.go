package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
)

// dialGo connects to addr, negotiates export name with NBD_OPT_GO and
// returns the connection, in the transmission phase.
func dialGo(t *testing.T, network, addr, name string) net.Conn {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var g [18]byte
	if _, err := io.ReadFull(c, g[:]); err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	c.Write(cat(clientFlags(clientFixedNewstyle|clientNoZeroes), option(optGo, goData(name)...)))
	for {
		var h [20]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			t.Fatalf("reading a reply: %v", err)
		}
		data := make([]byte, binary.BigEndian.Uint32(h[16:]))
		if _, err := io.ReadFull(c, data); err != nil {
			t.Fatalf("reading a reply: %v", err)
		}
		switch typ := binary.BigEndian.Uint32(h[12:]); typ {
		case repAck:
			c.SetDeadline(time.Time{})
			return c
		case repInfo:
		default:
			t.Fatalf("NBD_OPT_GO %q: reply %#x %q", name, typ, data)
		}
	}
}

// roundTrip writes p at off and reads it back through c.
func roundTrip(t *testing.T, c net.Conn, off uint64, p []byte) {
	t.Helper()
	var hdr [RequestSize]byte
	PutRequest(hdr[:], RequestHeader{Op: request.OpWrite, Cookie: 1, Offset: off, Length: uint64(len(p))})
	c.Write(append(hdr[:], p...))
	PutRequest(hdr[:], RequestHeader{Op: request.OpRead, Cookie: 2, Offset: off, Length: uint64(len(p))})
	c.Write(hdr[:])
	for _, want := range []uint64{1, 2} {
		var r [ReplySize]byte
		if _, err := io.ReadFull(c, r[:]); err != nil {
			t.Fatalf("reading reply %d: %v", want, err)
		}
		rep, err := ParseReply(r[:])
		if err != nil || rep.Cookie != want || rep.Error != 0 {
			t.Fatalf("reply %+v, %v; want cookie %d, no error", rep, err, want)
		}
	}
	got := make([]byte, len(p))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p) {
		t.Fatalf("read back %q, wrote %q", got, p)
	}
}

// lineLog collects log lines.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestServeListeners: bad clients (garbage, an oversized option, one that
// stalls) lose their own connection only; good ones reach their export;
// cancelling ends everything.
func TestServeListeners(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var log lineLog
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- ServeListeners(ctx, []net.Listener{ln, uln}, newTestExports(t), ListenOptions{
			Handshake: HandshakeOptions{Timeout: 500 * time.Millisecond}, Logf: log.logf})
	}()

	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	for _, bad := range [][]byte{
		[]byte("GET / HTTP/1.0\r\n\r\n"),
		cat(clientFlags(3), option(optGo)[:12], []byte{0xff, 0xff, 0xff, 0xff}),
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(bad)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("bad client %q: the server did not close the connection: %v", bad, err)
		}
		c.Close()
	}

	a := dialGo(t, "tcp", addr, "")
	b := dialGo(t, "unix", sock, "disk")
	roundTrip(t, a, 4096, []byte("written through a"))
	roundTrip(t, b, 0, bytes.Repeat([]byte{0xab}, 64<<10))
	ro := dialGo(t, "tcp", addr, "small")
	var hdr [RequestSize]byte
	PutRequest(hdr[:], RequestHeader{Op: request.OpWrite, Cookie: 7, Length: 512})
	ro.Write(append(hdr[:], make([]byte, 512)...))
	var r [ReplySize]byte
	if _, err := io.ReadFull(ro, r[:]); err != nil {
		t.Fatal(err)
	}
	if rep, _ := ParseReply(r[:]); rep.Error != errPerm {
		t.Errorf("write to the read-only export: error %d, want EPERM", rep.Error)
	}

	// The stalled client is cut off at the handshake deadline.
	stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, stalled); err != nil {
		t.Errorf("stalled client: the server did not close the connection: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeListeners = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeListeners did not return after cancel")
	}
	for _, c := range []net.Conn{a, b} {
		if _, err := c.Read(r[:]); !errors.Is(err, io.EOF) {
			t.Errorf("after cancel, a client's read = %v, want EOF", err)
		}
	}
	if _, err := net.Dial("unix", sock); err == nil {
		t.Error("the Unix socket still accepts connections after cancel")
	}
	text := log.String()
	for _, want := range []string{"handshake failed: nbd: protocol error: unknown client flags 0x47455420", "handshake failed: nbd: protocol error: NBD_OPT_GO with 4294967295 bytes",
		"handshake failed: nbd: the client did not finish the handshake in time", `export "disk" (1048576 bytes, flags 0x161)`, `client unix:`, `export "small" (65536 bytes, flags 0x103)`} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q:\n%s", want, text)
		}
	}
}
