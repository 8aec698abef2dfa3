package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// exports serves one export, as the default and as "disk".
type exports struct{ e *nbd.Export }

func (x exports) Export(name string) *nbd.Export {
	if name == "" || name == "disk" {
		return x.e
	}
	return nil
}
func (x exports) List() []*nbd.Export { return []*nbd.Export{x.e} }

// ownServer is nbd's own server on a Unix socket, serving src, which can
// be killed (listener and connections closed) and started again.
type ownServer struct {
	t      *testing.T
	sock   string
	export *nbd.Export

	// tls, when set, makes the server require TLS with it; each
	// connection's DescribeTLS is appended to seen.
	tls  *tls.Config
	seen []string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newOwnServer(t *testing.T, src sources.Source) *ownServer {
	return newOwnTLSServer(t, src, nil)
}

// newOwnTLSServer is newOwnServer requiring TLS with cfg, when not nil.
func newOwnTLSServer(t *testing.T, src sources.Source, cfg *tls.Config) *ownServer {
	s := &ownServer{t: t, sock: filepath.Join(t.TempDir(), "s"), conns: map[net.Conn]bool{}, tls: cfg}
	s.setSource(src)
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *ownServer) setSource(src sources.Source) {
	s.export = &nbd.Export{Name: "disk", Server: nbd.NewServer(src, nbd.Options{}), ReadOnly: src.Caps().ReadOnly}
}

func (s *ownServer) uri() nbd.URI { return nbd.URI{Network: "unix", Address: s.sock, Export: "disk"} }

func (s *ownServer) start() {
	ln, err := net.Listen("unix", s.sock)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.ln = ln
	x := exports{s.export}
	opts := nbd.HandshakeOptions{}
	if s.tls != nil {
		opts.TLS, opts.TLSConfig = nbd.TLSRequire, s.tls
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				sess, conn, err := nbd.HandshakeConn(context.Background(), c, x, opts)
				if err == nil {
					s.mu.Lock()
					s.seen = append(s.seen, nbd.DescribeTLS(conn))
					s.mu.Unlock()
					sess.Serve(context.Background(), conn, 0)
				}
			}()
		}
	}()
}

// kill closes the listener and every connection, as a server that died.
func (s *ownServer) kill() {
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		c.Close()
	}
	s.conns = map[net.Conn]bool{}
	s.mu.Unlock()
}

func openFast(t *testing.T, u nbd.URI, opts Options) *Source {
	t.Helper()
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	}
	s, err := Open(context.Background(), u, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformanceOwnServer(t *testing.T) {
	for _, ro := range []bool{false, true} {
		t.Run(fmt.Sprintf("read-only=%v", ro), func(t *testing.T) {
			want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
			sourcetest.Run(t, func(t *testing.T) sources.Source {
				m, err := sources.NewMemory(int64(len(want)))
				if err != nil {
					t.Fatal(err)
				}
				m.WriteAt(want, 0)
				t.Cleanup(func() { m.Close() })
				srv := newOwnServer(t, m)
				return openFast(t, srv.uri(), Options{ReadOnly: ro})
			}, want)
		})
	}
}

// gatedSource blocks the first read at gateOff until released, telling
// reached when it is there.
type gatedSource struct {
	sources.Source
	gateOff  int64
	once     sync.Once
	reached  chan struct{}
	released chan struct{}
}

func (g *gatedSource) ReadAt(p []byte, off int64) (int, error) {
	if off == g.gateOff {
		g.once.Do(func() {
			close(g.reached)
			<-g.released
		})
	}
	return g.Source.ReadAt(p, off)
}

// logLines collects a Source's log.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logLines) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestReconnectMidRequest drops the connection while a read is in the
// server and brings the server back: the read completes on the new
// connection, and so does a write sent while the server was away.
func TestReconnectMidRequest(t *testing.T) {
	m, err := sources.NewMemory(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := bytes.Repeat([]byte{0xa5}, 4096)
	m.WriteAt(want, 65536)
	g := &gatedSource{Source: m, gateOff: 65536, reached: make(chan struct{}), released: make(chan struct{})}
	srv := newOwnServer(t, g)
	var log logLines
	s := openFast(t, srv.uri(), Options{Logf: log.logf})
	defer s.Close()

	readDone := make(chan error, 1)
	got := make([]byte, 4096)
	go func() {
		_, err := s.ReadAt(got, 65536)
		readDone <- err
	}()
	<-g.reached
	srv.kill()
	close(g.released)
	writeDone := make(chan error, 1)
	go func() {
		_, err := s.WriteAt(bytes.Repeat([]byte{7}, 512), 0)
		writeDone <- err
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-readDone:
		t.Fatalf("the read ended while the server was down: %v", err)
	default:
	}
	srv.start()
	for name, ch := range map[string]chan error{"read": readDone, "write": writeDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: not done 30 s after the server came back", name)
		}
	}
	if !bytes.Equal(got, want) {
		t.Error("the read after the reconnect returned other bytes")
	}
	b := make([]byte, 512)
	m.ReadAt(b, 0)
	if !bytes.Equal(b, bytes.Repeat([]byte{7}, 512)) {
		t.Error("the write sent while the server was down did not reach it")
	}
	for _, line := range []string{"connection lost", "reconnected after"} {
		if !log.has(line) {
			t.Errorf("log lacks %q:\n%s", line, log.String())
		}
	}
}

// TestRetryWindow stops the server for longer than the retry window:
// requests fail with EIO once it has passed (at once after that), and
// succeed again when the server is back.
func TestRetryWindow(t *testing.T) {
	m, err := sources.NewMemory(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv := newOwnServer(t, m)
	var log logLines
	s := openFast(t, srv.uri(), Options{Logf: log.logf, RetryWindow: 300 * time.Millisecond})
	defer s.Close()
	p := make([]byte, 512)
	if _, err := s.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	srv.kill()
	start := time.Now()
	_, err = s.ReadAt(p, 0)
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "no connection to the server") {
		t.Fatalf("read with the server down: %v, want EIO", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("the read failed after %v, before the retry window", d)
	}
	start = time.Now()
	if _, err := s.WriteAt(p, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write after the window: %v, want EIO", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("a request after the window waited %v", d)
	}
	srv.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.ReadAt(p, 0)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing 30 s after the server came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !log.has("requests fail with EIO until the server is back") {
		t.Errorf("log lacks the window's line:\n%s", log.String())
	}
}

// TestReconnectRefusesAnotherExport brings the server back with another
// export: a size change or a read-only export is not taken.
func TestReconnectRefusesAnotherExport(t *testing.T) {
	tests := []struct {
		name string
		size int64
		ro   bool
		want string
	}{
		{name: "size", size: 2 << 20, want: "the export changed: it now has 2097152 bytes, not 1048576"},
		{name: "read-only", size: 1 << 20, ro: true, want: "the export changed: it is now read-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := sources.NewMemory(1 << 20)
			defer m.Close()
			srv := newOwnServer(t, m)
			var log logLines
			s := openFast(t, srv.uri(), Options{Logf: log.logf, RetryWindow: 500 * time.Millisecond})
			defer s.Close()
			srv.kill()
			m2, _ := sources.NewMemory(tt.size)
			defer m2.Close()
			var src sources.Source = m2
			if tt.ro {
				src = roMemory{m2}
			}
			srv.setSource(src)
			srv.start()
			if _, err := s.ReadAt(make([]byte, 512), 0); !errors.Is(err, syscall.EIO) {
				t.Fatalf("read: %v, want EIO", err)
			}
			if !log.has(tt.want) {
				t.Errorf("log lacks %q:\n%s", tt.want, log.String())
			}
		})
	}
}

type roMemory struct{ *sources.Memory }

func (m roMemory) Caps() sources.Caps               { return sources.Caps{ReadOnly: true, Parallel: true} }
func (roMemory) WriteAt([]byte, int64) (int, error) { return 0, sources.ErrReadOnly }
func (roMemory) Trim(int64, int64) error            { return sources.ErrReadOnly }
func (roMemory) Zero(int64, int64, bool) error      { return sources.ErrReadOnly }

func TestOpenErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none")
	_, err := Open(context.Background(), nbd.URI{Network: "unix", Address: sock}, Options{})
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("no server: %v, want ENOENT", err)
	}
	m, _ := sources.NewMemory(4096)
	defer m.Close()
	srv := newOwnServer(t, m)
	u := srv.uri()
	u.Export = "nope"
	var oe *nbd.OptionError
	if _, err := Open(context.Background(), u, Options{}); !errors.As(err, &oe) {
		t.Errorf("unknown export: %v, want an nbd.OptionError", err)
	}
}
