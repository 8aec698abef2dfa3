package attach

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSocketActivated: only a LISTEN_PID naming this process, with
// LISTEN_FDS, is socket activation.
func TestSocketActivated(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		pid, fds string
		want     bool
	}{
		{self, "1", true},
		{self, "2", true},
		{self, "", false},
		{"1", "1", false},
		{"", "1", false},
		{"x", "1", false},
	}
	for _, tt := range tests {
		t.Setenv(listenPIDEnv, tt.pid)
		t.Setenv(listenFDsEnv, tt.fds)
		if got := SocketActivated(); got != tt.want {
			t.Errorf("LISTEN_PID=%q LISTEN_FDS=%q: SocketActivated() = %v, want %v", tt.pid, tt.fds, got, tt.want)
		}
	}
}

// TestActivatedListener: a listening stream socket is taken over and
// accepts; a pipe, an unbound socket, a datagram socket and a closed
// descriptor are refused with the reason.
func TestActivatedListener(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	// A descriptor of its own: activatedListener closes it.
	fd, err := syscall.Dup(int(lf.Fd()))
	lf.Close()
	if err != nil {
		t.Fatal(err)
	}
	got, err := activatedListener(fd)
	if err != nil {
		t.Fatalf("a listening socket: %v", err)
	}
	defer got.Close()
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
		t.Errorf("descriptor %d is still open after activatedListener", fd)
	}
	go func() {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
		}
	}()
	if c, err := got.Accept(); err != nil {
		t.Errorf("Accept on the activated socket: %v", err)
	} else {
		c.Close()
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	stream, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(stream)
	dgram, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(dgram)
	closed := int(r.Fd())
	for _, tt := range []struct {
		name string
		fd   int
		want string
	}{
		{"a pipe", int(w.Fd()), "not a socket: socket operation on non-socket"},
		{"an unbound stream socket", stream, "a socket that is not listening"},
		{"a datagram socket", dgram, "a socket that is not listening"},
		{"a closed descriptor", func() int { r.Close(); return closed }(), "not a socket: bad file descriptor"},
	} {
		if _, err := activatedListener(tt.fd); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}
