package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/nbd"
)

// TestServeLimits runs nbdloop serve with --max-connections 1 and
// --idle-timeout 1, with nbdloop's own NBD client: a second client is
// refused while the first is connected, the first is disconnected once
// idle, and then the second gets in and, busy, stays.
func TestServeLimits(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "nbdloop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "nbd.sock")
	s := startServe(t, bin, "--unix", sock, "--max-connections", "1", "--idle-timeout", "1", "memory:1M")
	dial := func() (*nbd.Client, error) {
		return nbd.Dial(context.Background(), "unix", sock, nbd.ClientOptions{HandshakeTimeout: 5 * time.Second})
	}
	first, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	connected := time.Now()
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatalf("a second client got in past --max-connections 1:\n%s", s.log())
	}
	// The first client sends nothing: it is cut off after a second.
	buf := make([]byte, 512)
	for time.Since(connected) < 10*time.Second {
		time.Sleep(100 * time.Millisecond)
		if c, err := dial(); err == nil {
			defer c.Close()
			if since := time.Since(connected); since < time.Second {
				t.Errorf("the idle client's slot was free after %v, before --idle-timeout 1", since)
			}
			if err := first.Read(buf, 0); !errors.Is(err, nbd.ErrConnLost) {
				t.Errorf("the idle client's read: %v, want the connection lost", err)
			}
			// Busy for three timeouts: never cut off.
			for start := time.Now(); time.Since(start) < 3*time.Second; time.Sleep(200 * time.Millisecond) {
				if err := c.Write(buf, 4096, false); err != nil {
					t.Fatalf("the busy client: %v\n%s", err, s.log())
				}
			}
			c.Close()
			s.stop()
			mustContain(t, "serve's log", s.log(), "refused: the limit of clients connected at once (1) is reached",
				`export "": idle for 1s, disconnected`)
			return
		}
	}
	t.Fatalf("no second client got in after the first went idle:\n%s", s.log())
}
