package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// TestServeSocketActivation starts serve from systemd-socket-activate
// with two Unix sockets, as a socket unit would: nbdinfo reaches the
// export through both, and SIGTERM ends it. Under socket activation
// --listen, --unix and --background are refused, and so is a passed
// descriptor that is not a listening socket.
func TestServeSocketActivation(t *testing.T) {
	tooltest.Require(t, "systemd-socket-activate", "nbdinfo")
	dir := t.TempDir()
	bin := filepath.Join(dir, "nbdloop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	cmd := exec.Command("systemd-socket-activate", "-l", a, "-l", b, bin, "serve", "memory:3M")
	var log strings.Builder
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	done := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	for _, sock := range []string{a, b} {
		uri := "nbd+unix:///?socket=" + sock
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput()
			if err == nil {
				if got := strings.TrimSpace(string(out)); got != "3145728" {
					t.Errorf("nbdinfo --size %s = %s, want 3145728", uri, got)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nbdinfo %s: %v\n%s\nserve's log:\n%s", uri, err, out, log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("serve after SIGTERM: %v\n%s", waitErr, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not exit after SIGTERM:\n%s", log.String())
	}
	mustContain(t, "serve's log", log.String(), "listening on unix "+a, "listening on unix "+b, `client unix:`+a+`: export ""`, `client unix:`+b+`: export ""`)

	// The refusals, each from a shell that sets LISTEN_PID to its own pid
	// and then becomes serve.
	for _, tt := range []struct {
		env, redirect string
		args          []string
		code          int
		want          string
	}{
		{"LISTEN_FDS=1", "", []string{"--listen", "127.0.0.1:0"}, exitUsage, "serve: --listen and --unix do not apply under socket activation"},
		{"LISTEN_FDS=1", "", []string{"--unix", filepath.Join(dir, "c.sock")}, exitUsage, "serve: --listen and --unix do not apply under socket activation"},
		{"LISTEN_FDS=1", "", []string{"--background"}, exitUsage, "serve: --background does not apply under socket activation"},
		{"LISTEN_FDS=1", "3</dev/null", nil, 1, "socket activation: descriptor 3: not a socket: socket operation on non-socket (pass listening stream sockets"},
		{"LISTEN_FDS=none", "", nil, 1, `socket activation: LISTEN_FDS="none" is not a count of sockets from 1 to 64`},
	} {
		script := `LISTEN_PID=$$ ` + tt.env + ` exec "$0" serve "$@" memory:1M ` + tt.redirect
		out, err := exec.Command("sh", append([]string{"-c", script, bin}, tt.args...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tt.code || !strings.Contains(string(out), tt.want) {
			t.Errorf("%s serve %s %s: status %d, %q; want %d and %q", tt.env, strings.Join(tt.args, " "), tt.redirect, code, out, tt.code, tt.want)
		}
	}
}
