package attach

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenAddress(t *testing.T) {
	for in, want := range map[string]string{
		"": ":10809", "127.0.0.1": "127.0.0.1:10809", "127.0.0.1:0": "127.0.0.1:0", ":9000": ":9000",
		"::1": "[::1]:10809", "[::1]": "[::1]:10809", "[::1]:9000": "[::1]:9000", "localhost": "localhost:10809",
	} {
		if got := ListenAddress(in); got != want {
			t.Errorf("ListenAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestListenUnix: a socket left by a dead server is replaced; a live
// server's socket and a file that is not a socket are not.
func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if ln, err = listenUnix(stale); err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	if _, err := listenUnix(stale); err == nil || !strings.Contains(err.Error(), "another server listens on this socket") {
		t.Errorf("over a live socket: %v, want refused", err)
	}
	ln.Close()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := listenUnix(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a file: %v, want refused", err)
	}
}
