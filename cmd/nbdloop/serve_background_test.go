package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/nbd"
)

// TestServeBackground runs serve --background as any user, with the state
// directory in a temporary one: it listens, list --served shows it, a
// client writes through it; the server killed with SIGKILL is restarted
// on the same addresses and the client reads the data back; serve --stop
// ends it and removes its record. A memory: export is not restarted: the
// serve is shown dead, with the reason.
func TestServeBackground(t *testing.T) {
	tooltest.Require(t, "qemu-img")
	dir := t.TempDir()
	bin := filepath.Join(dir, "nbdloop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	stateDir := filepath.Join(dir, "state")
	t.Setenv("NBDLOOP_STATE_DIR", stateDir)
	nbdloop := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("nbdloop %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
		}
		return string(out)
	}
	served := func() []attach.NetState {
		t.Helper()
		var l struct{ Served []attach.NetState }
		if err := json.Unmarshal([]byte(nbdloop("list", "--served", "--json")), &l); err != nil {
			t.Fatal(err)
		}
		return l.Served
	}
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nbd.sock")
	out := nbdloop("serve", "--background", "--listen", "127.0.0.1:0", "--unix", sock, img)
	m := regexp.MustCompile(`listening on tcp (\S+)\nlistening on unix (\S+)\n`).FindStringSubmatch(out)
	if m == nil || m[2] != sock {
		t.Fatalf("serve --background printed %q, want its addresses", out)
	}
	addr := m[1]
	t.Cleanup(func() { exec.Command(bin, "serve", "--stop", addr).Run() })

	list := served()
	if len(list) != 1 || list[0].State != attach.StateRunning || list[0].Exports[0].Source != img {
		t.Fatalf("list --served: %+v, want the serve running", list)
	}
	table := nbdloop("list", "--served")
	if !strings.Contains(table, addr+","+sock) || !strings.Contains(table, "running") || !strings.Contains(table, "="+img) {
		t.Errorf("list --served's table lacks the serve:\n%s", table)
	}
	if devs := nbdloop("list", "--json"); !strings.Contains(devs, `"devices": []`) {
		t.Errorf("list --json shows more than devices:\n%s", devs)
	}
	dial := func(network, address string) *nbd.Client {
		t.Helper()
		c, err := nbd.Dial(context.Background(), network, address, nbd.ClientOptions{HandshakeTimeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("connecting to %s: %v", address, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	want := bytes.Repeat([]byte("kept over a restart "), 100)
	tcpClient := dial("tcp", addr)
	if err := tcpClient.Write(want, 8192, false); err != nil {
		t.Fatal(err)
	}
	// The live client count: one, two, then one again after a client
	// leaves, in the JSON and the table; the file it is read from is
	// private to the user.
	waitClients(t, served, 1)
	unixClient := dial("unix", sock)
	waitClients(t, served, 2)
	if table := nbdloop("list", "--served", "-n"); !regexp.MustCompile(`running\s+2\s+0`).MatchString(table) {
		t.Errorf("list --served shows no CLIENTS 2:\n%s", table)
	}
	unixClient.Close()
	waitClients(t, served, 1)
	if fi, err := os.Stat(filepath.Join(stateDir, fmt.Sprintf("serve-%d.clients.json", list[0].Supervisor))); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the clients file: %v, mode %v; want 0600", err, fi.Mode())
	}

	first := list[0].PID
	tcpClient.Close()
	waitClients(t, served, 0)
	syscall.Kill(first, syscall.SIGKILL)
	deadline := time.Now().Add(20 * time.Second)
	for {
		list = served()
		if len(list) == 1 && list[0].PID != first && list[0].State == attach.StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed server was not restarted: %+v", list)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if list[0].Restarts != 1 || !strings.Contains(list[0].LastExit, "killed by signal 9") {
		t.Errorf("after the restart: restarts %d, last exit %q", list[0].Restarts, list[0].LastExit)
	}
	for _, c := range []*nbd.Client{dial("tcp", addr), dial("unix", sock)} {
		got := make([]byte, len(want))
		if err := c.Read(got, 8192); err != nil || !bytes.Equal(got, want) {
			t.Errorf("read after the restart: %v, data equal %v", err, bytes.Equal(got, want))
		}
	}

	// The restarted server counts its own clients: the two above.
	waitClients(t, served, 2)
	if b, err := os.ReadFile(list[0].Log); err != nil || !strings.Contains(string(b), "server killed by signal 9 (killed); restarting") {
		t.Errorf("the serve's log %s (%v) lacks the restart:\n%s", list[0].Log, err, b)
	}
	nbdloop("serve", "--stop", addr)
	if list = served(); len(list) != 0 {
		t.Errorf("after --stop, list --served shows %+v", list)
	}
	if left, _ := filepath.Glob(filepath.Join(stateDir, "serve-*")); len(left) > 1 {
		t.Errorf("after --stop, the state directory holds %v (the log at most)", left)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("the Unix socket is still there after --stop")
	}
	if cmd := exec.Command(bin, "serve", "--stop", addr); cmd.Run() == nil {
		t.Error("serve --stop of a stopped serve succeeded")
	}

	// What dies with its server is not restarted: a memory: export's
	// bytes, and a qcow2 image's cluster mappings (as the server reported
	// the format it opened). The serve is shown dead, with the reason.
	qcow := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", qcow, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	for _, tt := range []struct{ source, reason string }{
		{"memory:1M", "a memory: export's bytes died with the server"},
		{qcow, "qcow2 keeps new cluster mappings in the server"},
	} {
		out = nbdloop("serve", "--background", "--listen", "127.0.0.1:0", tt.source)
		maddr := strings.TrimSpace(strings.TrimPrefix(out, "listening on tcp "))
		t.Cleanup(func() { exec.Command(bin, "serve", "--stop", maddr).Run() })
		list = served()
		if len(list) != 1 {
			t.Fatalf("list --served: %+v", list)
		}
		syscall.Kill(list[0].PID, syscall.SIGKILL)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if list = served(); len(list) == 1 && list[0].State == attach.StateDead {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the serve is not shown dead: %+v", tt.source, list)
			}
		}
		if !strings.Contains(list[0].DeadReason, tt.reason) {
			t.Errorf("%s: dead reason %q, want %q", tt.source, list[0].DeadReason, tt.reason)
		}
		nbdloop("serve", "--stop", maddr)
		if list = served(); len(list) != 0 {
			t.Errorf("after --stop, list --served shows %+v", list)
		}
	}
}

// waitClients waits until the one serve that served lists has n clients,
// in total and on its one export.
func waitClients(t *testing.T, served func() []attach.NetState, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		list := served()
		if len(list) == 1 && list[0].Clients == n && list[0].Exports[0].Clients == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("list --served: %+v, want %d clients", list, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
