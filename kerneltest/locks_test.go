//go:build kernel

package kerneltest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKernelImageLocks: a second read-write attach of an image, or nbdloop
// beside qemu-nbd on one qcow2, is refused with the holder named, and
// nothing is corrupted; read-only attaches share; the locks hold across
// kill -9 of the server and its restart.
func TestKernelImageLocks(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "disk.img")
	must(t, "truncate", "-s", "64M", img)

	dev := attachDev(t, img)
	for _, args := range [][]string{{img}, {"-r", img}} {
		r := run(t, nbdloop(t), append([]string{"attach"}, args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "is being written by "+dev) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("attach %v beside %s: exit %d, %q; want 1 and one line naming %s", args, dev, r.code, r.stderr, dev)
		}
	}
	killServer(t, dev, 64<<20)
	if r := run(t, nbdloop(t), "attach", img); r.code != 1 || !strings.Contains(r.stderr, "is being written by "+dev) {
		t.Errorf("attach after the restart: exit %d, %q; want the lock held", r.code, r.stderr)
	}
	detach(t, dev)

	ro1 := attachDev(t, "-r", img)
	ro2 := attachDev(t, "-r", img)
	if r := run(t, nbdloop(t), "attach", img); r.code != 1 || !strings.Contains(r.stderr, "does not let others write it") {
		t.Errorf("read-write attach beside readers: exit %d, %q", r.code, r.stderr)
	}
	detach(t, ro1)
	detach(t, ro2)

	// qemu-nbd first, then nbdloop; then the other way round.
	q := filepath.Join(dir, "disk.qcow2")
	must(t, "qemu-img", "create", "-q", "-f", "qcow2", q, "64M")
	sock := filepath.Join(dir, "q.sock")
	qn := exec.Command("qemu-nbd", "--socket="+sock, "-f", "qcow2", q)
	if err := qn.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := run(t, nbdloop(t), "attach", q); r.code != 1 || !strings.Contains(r.stderr, "another program (qemu") {
		t.Errorf("attach beside qemu-nbd: exit %d, %q", r.code, r.stderr)
	}
	qn.Process.Signal(syscall.SIGTERM)
	qn.Wait()
	dev = attachDev(t, q)
	must(t, "dd", "if=/dev/urandom", "of="+dev, "bs=1M", "count=8", "oflag=direct", "status=none")
	var stderr bytes.Buffer
	qn = exec.Command("qemu-nbd", "--socket="+sock+"2", "-f", "qcow2", q)
	qn.Stderr = &stderr
	if err := qn.Run(); err == nil || !strings.Contains(stderr.String(), "lock") {
		t.Errorf("qemu-nbd beside nbdloop: %v, %q; want a lock error", err, stderr.String())
	}
	detach(t, dev)
	if r := run(t, "qemu-img", "check", q); r.code != 0 {
		t.Errorf("qemu-img check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	requireClean(t, "image locks")
}

// TestKernelRestartElsewhere: a device attached by a relative path is
// restarted by hand from another directory that holds a file of the same
// name: the original file is served. A file replaced under the device's
// path is refused at the next restart, with the reason in list.
func TestKernelRestartElsewhere(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.Mkdir(a, 0o755)
	os.Mkdir(b, 0o755)
	sh(t, "head -c 8M /dev/urandom > "+a+"/disk.img && head -c 8M /dev/urandom > "+b+"/disk.img")
	want := sha(t, filepath.Join(a, "disk.img"), 0)

	r := runIn(t, a, nbdloop(t), "attach", "disk.img")
	if r.code != 0 {
		t.Fatalf("attach disk.img in %s: %s", a, r.stderr)
	}
	dev := strings.TrimSpace(r.stdout)
	t.Cleanup(func() { run(t, nbdloop(t), "detach", "--force", dev) })
	d := deviceInfo(t, dev)
	syscall.Kill(d.Supervisor, syscall.SIGKILL)
	syscall.Kill(d.PID, syscall.SIGKILL)
	// restart takes the device over only once both are gone (a live
	// supervisor is asked to try again instead).
	waitDead(t, dev)
	if r := runIn(t, b, nbdloop(t), "restart", dev); r.code != 0 {
		t.Fatalf("restart from %s: exit %d: %s", b, r.code, r.stderr)
	}
	if got := sha(t, dev, 0); got != want {
		t.Fatal("after a restart from another directory the device serves another file")
	}

	// Replace the file under the same name; the next restart refuses.
	if err := os.Rename(filepath.Join(b, "disk.img"), filepath.Join(a, "disk.img")); err != nil {
		t.Fatal(err)
	}
	d = deviceInfo(t, dev)
	killed := d.PID
	syscall.Kill(killed, syscall.SIGKILL)
	deadline := time.Now().Add(60 * time.Second)
	for {
		d = deviceInfo(t, dev)
		if d.State == "dead" && strings.Contains(d.Reason, "is another file than when the device was attached") {
			break
		}
		if d.State == "running" && d.PID != killed && sha(t, dev, 0) != want {
			t.Fatal("the replaced file is served")
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refusal 60 s after the kill: state %s, reason %q, last exit %q", d.State, d.Reason, d.LastExit)
		}
		time.Sleep(200 * time.Millisecond)
	}
	detach(t, dev)
	requireClean(t, "restart elsewhere")
}

// TestKernelLogAppends: --filter log:file= on an existing log appends, a
// second attach after the first; an attach that fails (its device is busy)
// leaves the log untouched, and a new log path is not created.
func TestKernelLogAppends(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	logPath := filepath.Join(dir, "req.jsonl")
	lines := func() int {
		b, _ := os.ReadFile(logPath)
		return bytes.Count(b, []byte("\n"))
	}
	var counts []int
	for i := 0; i < 2; i++ {
		dev := attachDev(t, "--filter", "log:file="+logPath, "memory:16M")
		must(t, "dd", "if=/dev/zero", "of="+dev, "bs=4k", "count=8", "oflag=direct", "status=none")
		detach(t, dev)
		counts = append(counts, lines())
	}
	if counts[0] == 0 || counts[1] <= counts[0] {
		t.Fatalf("log lines after two attaches: %v, want the second attach appended", counts)
	}
	before := sha(t, logPath, 0)
	busy := attachDev(t, "memory:16M")
	newLog := filepath.Join(dir, "new.jsonl")
	for _, l := range []string{logPath, newLog} {
		r := run(t, nbdloop(t), "attach", "--device", busy, "--filter", "log:file="+l, "memory:16M")
		if r.code == 0 {
			t.Fatalf("attach to the busy %s succeeded", busy)
		}
	}
	if sha(t, logPath, 0) != before {
		t.Error("a failed attach changed the existing log")
	}
	if _, err := os.Stat(newLog); err == nil {
		t.Error("a failed attach left a new, empty log behind")
	}
	detach(t, busy)
	requireClean(t, "log appends")
}
