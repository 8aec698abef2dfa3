//go:build kernel

package kerneltest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// requireUblk fails (never skips) when the test cannot reach the ublk
// driver (Linux 6.0+ with ublk_drv loaded: run.sh --kernel 6.12).
func requireUblk(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("kernel tests must run as root")
	}
	if _, err := os.Stat("/dev/ublk-control"); err != nil {
		t.Fatal("the ublk driver is not loaded: the ublk tests need Linux 6.12's ublk_drv (scripts/vm/run.sh --kernel 6.12, modprobe.sh ublk_drv)")
	}
}

// attachUblk attaches SOURCE with --driver ublk, registers a detach at
// cleanup and returns the device name.
func attachUblk(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, nbdloop(t), append([]string{"attach", "--driver", "ublk"}, args...)...)
	if r.code != 0 {
		t.Fatalf("nbdloop attach --driver ublk %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	dev := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(dev, "/dev/ublkb") || strings.Contains(dev, "\n") {
		t.Fatalf("nbdloop attach printed %q, want one /dev/ublkbN line", r.stdout)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(dev); err == nil {
			run(t, nbdloop(t), "detach", "--force", dev)
		}
	})
	return dev
}

// mountedUblkExt4 makes a raw file of size in a scratch directory,
// attaches it with --driver ublk, makes ext4 on it and mounts it; the
// unmount and the detach are registered for cleanup. It returns the device
// and the mount point.
func mountedUblkExt4(t *testing.T, size string) (dev, mnt string) {
	t.Helper()
	dir := scratch(t)
	img := filepath.Join(dir, "ext4.img")
	must(t, "truncate", "-s", size, img)
	dev = attachUblk(t, img)
	must(t, "mkfs.ext4", "-q", dev)
	mnt = filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	must(t, "mount", dev, mnt)
	t.Cleanup(func() { run(t, "umount", mnt) })
	return dev, mnt
}

// fioVerify runs fio with crc32c checksums in dir: 4 KiB random direct
// writes with fsyncs by two jobs, then 1 MiB sequential ones, each
// verified by reading back.
func fioVerify(t *testing.T, dir string) {
	t.Helper()
	for _, job := range [][]string{
		{"--name=rand", "--size=32M", "--bs=4k", "--rw=randwrite", "--numjobs=2", "--fsync=32"},
		{"--name=seq", "--size=64M", "--bs=1M", "--rw=write"},
	} {
		args := append([]string{"--directory=" + dir, "--direct=1", "--ioengine=psync",
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1"}, job...)
		cmd := exec.Command("fio", args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fio %s: %v\n%s", strings.Join(job, " "), err, out)
		}
	}
}

// TestKernelUblkFio serves a memory: device and a raw file through ublk:
// attach prints /dev/ublkbN, list shows it running with its source and
// size, ext4 is made and mounted, fio writes and verifies with crc32c,
// e2fsck finds the file system clean, detach removes the device and the
// record, and the raw file holds the file system afterwards.
func TestKernelUblkFio(t *testing.T) {
	requireUblk(t)
	dir := scratch(t)
	img := filepath.Join(dir, "raw.img")
	must(t, "truncate", "-s", "256M", img)
	for _, c := range []struct{ name, source string }{
		{"memory", "memory:256M"},
		{"raw file", img},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev := attachUblk(t, c.source)
			found := false
			for _, d := range listDevices(t).Devices {
				if d.Name == dev {
					found = true
					if d.State != "running" || d.Size != 256<<20 {
						t.Errorf("list shows %s as %s with %d bytes, want running with %d", dev, d.State, d.Size, 256<<20)
					}
				}
			}
			if !found {
				t.Fatalf("list does not show %s", dev)
			}
			if out := must(t, nbdloop(t), "list"); !strings.Contains(out, dev) {
				t.Errorf("list's table does not show %s:\n%s", dev, out)
			}
			must(t, "mkfs.ext4", "-q", dev)
			mnt := filepath.Join(dir, "mnt")
			os.Mkdir(mnt, 0o755)
			must(t, "mount", dev, mnt)
			fioVerify(t, mnt)
			if r := run(t, nbdloop(t), "detach", dev); r.code == 0 || !strings.Contains(r.stderr, "mounted") {
				t.Errorf("detach of a mounted %s: exit %d, %q; want a refusal naming the mount", dev, r.code, r.stderr)
			}
			must(t, "umount", mnt)
			if r := run(t, "e2fsck", "-fn", dev); r.code != 0 {
				t.Fatalf("e2fsck: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			start := time.Now()
			must(t, nbdloop(t), "detach", dev)
			t.Logf("detached %s in %v", dev, time.Since(start).Round(time.Millisecond))
			if _, err := os.Stat(dev); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still exists after detach (%v)", dev, err)
			}
			for _, d := range listDevices(t).Devices {
				if d.Name == dev {
					t.Errorf("list still shows %s after detach", dev)
				}
			}
		})
	}
	// The file system reached the raw file.
	if r := run(t, "e2fsck", "-fn", img); r.code != 0 {
		t.Fatalf("e2fsck of the raw file after detach: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestKernelUblkDevice: attach --driver ublk --device makes the device it
// names; a second attach asking for the same number fails with one line
// naming it and leaves nothing behind (list shows one device, which still
// reads); detach removes it.
func TestKernelUblkDevice(t *testing.T) {
	requireUblk(t)
	const want = "/dev/ublkb9"
	dev := attachUblk(t, "--device", want, "memory:64M")
	if dev != want {
		t.Fatalf("attach --driver ublk --device %s printed %s", want, dev)
	}
	must(t, "dd", "if=/dev/urandom", "of="+dev, "bs=1M", "count=4", "oflag=direct", "status=none")
	before := must(t, "sha256sum", dev)
	other := attachUblk(t, "memory:16M")
	if out := must(t, nbdloop(t), "list", "-n", "-O", "NAME", dev); strings.TrimSpace(out) != dev {
		t.Errorf("list %s printed %q, want that device alone (%s is attached too)", dev, out, other)
	}
	must(t, nbdloop(t), "detach", other)
	r := run(t, nbdloop(t), "attach", "--driver", "ublk", "--device", "ublkb9", "memory:64M")
	msg := strings.TrimSpace(r.stderr)
	if r.code != 1 || strings.Contains(msg, "\n") || !strings.Contains(msg, want) || !strings.Contains(msg, "--device") {
		t.Fatalf("a second attach --device %s: exit %d, stderr %q; want exit 1 and one line naming the device and --device", want, r.code, msg)
	}
	t.Logf("%s", msg)
	n := 0
	for _, d := range listDevices(t).Devices {
		if strings.HasPrefix(d.Name, "/dev/ublkb") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("list shows %d ublk devices after the refused attach, want 1", n)
	}
	if after := must(t, "sha256sum", dev); after != before {
		t.Errorf("%s reads differently after the refused attach", dev)
	}
	must(t, nbdloop(t), "detach", dev)
	if _, err := os.Stat(dev); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after detach (%v)", dev, err)
	}
}

// TestKernelUblkFilterLog: the log filter records the requests of a ublk
// device as it does an nbd device's (every write dd sent, at its offset,
// once).
func TestKernelUblkFilterLog(t *testing.T) {
	requireUblk(t)
	logFile := filepath.Join(scratch(t), "requests.jsonl")
	dev := attachUblk(t, "--filter", "log:file="+logFile, "memory:64M")
	must(t, "dd", "if=/dev/urandom", "of="+dev, "bs=64k", "seek=48", "count=16", "oflag=direct", "status=none")
	must(t, nbdloop(t), "detach", dev)
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	covered := map[uint64]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r struct {
			Op     string `json:"op"`
			Offset uint64 `json:"offset"`
			Length uint64 `json:"length"`
			Error  string `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if r.Op != "write" {
			continue
		}
		if r.Error != "" {
			t.Errorf("write at %d: error %q", r.Offset, r.Error)
		}
		for off := r.Offset; off < r.Offset+r.Length; off += 4096 {
			covered[off]++
		}
	}
	for off := uint64(3 << 20); off < 4<<20; off += 4096 {
		if covered[off] != 1 {
			t.Fatalf("the log has %d writes of the 4 KiB at %d, want 1 (%d blocks written in all)", covered[off], off, len(covered))
		}
	}
	if len(covered) != 256 {
		t.Errorf("the log has writes of %d 4 KiB blocks, want the 256 dd wrote", len(covered))
	}
}

// TestKernelUblkStats: a ublk device attached with the stats filter has
// its statistics read by stats (--json: the device, 1 MiB written), top
// --once and detach --stats, as an nbd device's are.
func TestKernelUblkStats(t *testing.T) {
	requireUblk(t)
	dev := attachUblk(t, "--filter", "stats:interval=1s", "memory:64M")
	must(t, "dd", "if=/dev/urandom", "of="+dev, "bs=64k", "count=16", "oflag=direct", "status=none")
	var snap struct {
		Device string `json:"device"`
		Ops    []struct {
			Op    string `json:"op"`
			Count uint64 `json:"count"`
			Bytes uint64 `json:"bytes"`
		} `json:"ops"`
	}
	written := func() uint64 {
		for _, o := range snap.Ops {
			if o.Op == "write" {
				return o.Bytes
			}
		}
		return 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := json.Unmarshal([]byte(must(t, nbdloop(t), "stats", "--json", dev)), &snap); err != nil {
			t.Fatal(err)
		}
		if written() == 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats --json %s: %+v; want 1 MiB written within 10 s", dev, snap)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if snap.Device != dev {
		t.Errorf("stats --json names %q, want %s", snap.Device, dev)
	}
	if out := must(t, nbdloop(t), "top", "--once", dev); !strings.Contains(out, dev) || !strings.Contains(out, "write") {
		t.Errorf("top --once %s printed %q", dev, out)
	}
	if out := must(t, nbdloop(t), "detach", "--stats", dev); !strings.Contains(out, "write") {
		t.Errorf("detach --stats %s printed %q", dev, out)
	}
	if _, err := os.Stat(dev); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after detach (%v)", dev, err)
	}
	if m, _ := filepath.Glob("/run/nbdloop/ublkb*.stats.json"); len(m) != 0 {
		t.Errorf("stats files left after detach: %v", m)
	}
}

// TestKernelUblkDetachesItself: the commands that detach the devices they
// attached (attach --run when its command ends, nbdtab detach) detach a
// ublk device, and no other: an nbd device of the same number, attached by
// hand, stays attached.
func TestKernelUblkDetachesItself(t *testing.T) {
	requireUblk(t)
	requireDriver(t)
	for _, c := range []struct {
		name string
		n    int
		act  func(t *testing.T, dev string)
	}{
		{"attach --run", 3, func(t *testing.T, dev string) {
			r := run(t, nbdloop(t), "attach", "--driver", "ublk", "--device", dev, "--run", `test -b "$DEVICE" && echo "$DEVICE"`, "memory:16M")
			if r.code != 0 || strings.TrimSpace(r.stdout) != dev {
				t.Fatalf("attach --driver ublk --run: exit %d, stdout %q, stderr %q; want 0 and %s", r.code, r.stdout, r.stderr, dev)
			}
		}},
		{"nbdtab detach", 6, func(t *testing.T, dev string) {
			tab := filepath.Join(scratch(t), "nbdtab")
			os.WriteFile(tab, []byte("--driver ublk --device "+dev+" memory:16M\n"), 0o644)
			if out := must(t, nbdloop(t), "nbdtab", "attach", tab); !strings.HasPrefix(out, dev+"\t") {
				t.Fatalf("nbdtab attach printed %q, want %s and the line", out, dev)
			}
			if out := must(t, nbdloop(t), "nbdtab", "detach", tab); !strings.HasPrefix(out, dev+"\t") || !strings.Contains(out, "(detached)") {
				t.Errorf("nbdtab detach printed %q", out)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			nbd := attachDev(t, "--device", fmt.Sprintf("/dev/nbd%d", c.n), "memory:16M")
			dev := fmt.Sprintf("/dev/ublkb%d", c.n)
			c.act(t, dev)
			if _, err := os.Stat(dev); !errors.Is(err, os.ErrNotExist) {
				run(t, nbdloop(t), "detach", "--force", dev)
				t.Errorf("%s is still there after %s (%v)", dev, c.name, err)
			}
			if _, err := os.Stat(pidFile(nbd)); err != nil {
				t.Fatalf("%s was detached by %s of %s: %v", nbd, c.name, dev, err)
			}
			detach(t, nbd)
		})
	}
}

// TestKernelUblkKilledServer: with --no-restart, a ublk server killed
// with SIGKILL leaves a dead device; list says so and detach removes it.
func TestKernelUblkKilledServer(t *testing.T) {
	requireUblk(t)
	dev := attachUblk(t, "--no-restart", "memory:64M")
	var pid int
	for _, d := range listDevices(t).Devices {
		if d.Name == dev {
			pid = d.PID
		}
	}
	if pid == 0 {
		t.Fatalf("list does not show %s", dev)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	p.Kill()
	waitFor(t, 20*time.Second, "list to show "+dev+" dead", func() error {
		for _, d := range listDevices(t).Devices {
			if d.Name == dev && d.State == "dead" {
				return nil
			}
			if d.Name == dev {
				return fmt.Errorf("state %s", d.State)
			}
		}
		return errors.New("not listed")
	})
	must(t, nbdloop(t), "detach", dev)
	waitFor(t, 20*time.Second, dev+" to go", func() error {
		if _, err := os.Stat(dev); err == nil {
			return errors.New("still there")
		}
		return nil
	})
}

// TestKernelUblkRestartByHand: with the supervisor and then the server of
// a ublk device killed (SIGKILL), the kernel holds the device's I/O and
// list shows it dead; nbdloop restart starts a supervisor and a server
// that take the device over with user recovery: the mounted ext4 carries
// on (a file written before reads back after the caches are dropped, a new
// one is written with fsync), and e2fsck finds it clean.
func TestKernelUblkRestartByHand(t *testing.T) {
	requireUblk(t)
	dev, mnt := mountedUblkExt4(t, "128M")
	first := filepath.Join(mnt, "before")
	must(t, "dd", "if=/dev/urandom", "of="+first, "bs=1M", "count=4", "conv=fsync", "status=none")
	sum := must(t, "sha256sum", first)
	var sup, srv int
	for _, d := range listDevices(t).Devices {
		if d.Name == dev {
			sup, srv = d.Supervisor, d.PID
		}
	}
	if sup == 0 || srv == 0 {
		t.Fatalf("list shows %s with supervisor %d, server %d", dev, sup, srv)
	}
	for _, pid := range []int{sup, srv} {
		syscall.Kill(pid, syscall.SIGKILL)
		waitFor(t, 20*time.Second, fmt.Sprintf("process %d to end", pid), func() error {
			if syscall.Kill(pid, 0) == nil {
				return errors.New("still running")
			}
			return nil
		})
	}
	waitFor(t, 20*time.Second, "list to show "+dev+" dead", func() error {
		if state, _, _ := ublkDevice(t, dev); state != "dead" {
			return fmt.Errorf("state %q", state)
		}
		return nil
	})
	if out := must(t, nbdloop(t), "restart", dev); !strings.Contains(out, dev+": restarted") {
		t.Errorf("restart printed %q", out)
	}
	state, pid, _ := ublkDevice(t, dev)
	if state != "running" || pid == srv || pid == 0 {
		t.Fatalf("after restart, list shows %s %s with server %d (the killed one was %d)", dev, state, pid, srv)
	}
	must(t, "sh", "-c", "echo 3 > /proc/sys/vm/drop_caches")
	if got := must(t, "sha256sum", first); got != sum {
		t.Errorf("the file written before the kills reads differently after restart")
	}
	must(t, "dd", "if=/dev/urandom", "of="+filepath.Join(mnt, "after"), "bs=1M", "count=4", "conv=fsync", "status=none")
	must(t, "umount", mnt)
	if r := run(t, "e2fsck", "-fn", dev); r.code != 0 {
		t.Fatalf("e2fsck after the restart: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	must(t, nbdloop(t), "detach", dev)
}

// ublkDevice returns list's row of dev.
func ublkDevice(t *testing.T, dev string) (state string, pid, restarts int) {
	t.Helper()
	for _, d := range listDevices(t).Devices {
		if d.Name == dev {
			return d.State, d.PID, d.Restarts
		}
	}
	t.Fatalf("list does not show %s", dev)
	return "", 0, 0
}

// TestKernelUblkRestartFio: ext4 on a ublk device over a raw file; fio
// writes with crc32c checksums and fsyncs while the server is killed with
// SIGKILL twice; each time the supervisor starts a server that takes the
// device over with user recovery (the mount stays), the run completes
// without an I/O error, every block verifies, e2fsck finds the file system
// clean and list counts two restarts.
func TestKernelUblkRestartFio(t *testing.T) {
	requireUblk(t)
	dev, mnt := mountedUblkExt4(t, "256M")
	fio := exec.Command("fio", "--name=verify", "--directory="+mnt, "--size=32M", "--bs=4k",
		"--rw=randwrite", "--direct=1", "--ioengine=psync", "--fsync=32", "--verify=crc32c",
		"--do_verify=1", "--verify_fatal=1", "--rate_iops=,200")
	out := &strings.Builder{}
	fio.Stdout, fio.Stderr = out, out
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fio.Wait() }()
	time.Sleep(5 * time.Second) // fio lays its file out, then writes
	for i := 1; i <= 2; i++ {
		select {
		case err := <-done:
			t.Fatalf("fio ended before kill %d (%v): make its run longer\n%s", i, err, out)
		default:
		}
		state, pid, _ := ublkDevice(t, dev)
		if state != "running" {
			t.Fatalf("%s is %s before kill %d, want running", dev, state, i)
		}
		t0 := time.Now()
		syscall.Kill(pid, syscall.SIGKILL)
		waitFor(t, 30*time.Second, "a new server for "+dev, func() error {
			state, newPID, restarts := ublkDevice(t, dev)
			if state != "running" || newPID == pid || restarts != i {
				return fmt.Errorf("state %s, pid %d, %d restarts", state, newPID, restarts)
			}
			return nil
		})
		t.Logf("kill %d: a new server runs %v after kill -9", i, time.Since(t0).Round(time.Millisecond))
		time.Sleep(3 * time.Second)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("fio: %v\n%s", err, out)
		}
	case <-time.After(5 * time.Minute):
		fio.Process.Kill()
		t.Fatalf("fio did not finish\n%s", out)
	}
	must(t, "umount", mnt)
	if r := run(t, "e2fsck", "-fn", dev); r.code != 0 {
		t.Fatalf("e2fsck: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, _, restarts := ublkDevice(t, dev); restarts != 2 {
		t.Errorf("list counts %d restarts, want 2", restarts)
	}
	must(t, nbdloop(t), "detach", dev)
}

// TestKernelUblkNoDriver: where /dev/ublk-control is missing (here hidden
// by an empty /dev in a private mount namespace), attach --driver ublk
// fails with one line that names --driver nbd.
func TestKernelUblkNoDriver(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("kernel tests must run as root")
	}
	r := run(t, "unshare", "-m", "--propagation", "private", "sh", "-c",
		"mount -t tmpfs none /dev && exec \"$0\" attach --driver ublk --foreground memory:1M", nbdloop(t))
	msg := strings.TrimSpace(r.stderr)
	if r.code == 0 || strings.Contains(msg, "\n") || !strings.Contains(msg, "--driver nbd") || !strings.Contains(msg, "ublk") {
		t.Fatalf("attach --driver ublk without the driver: exit %d, stderr %q; want one line naming --driver nbd", r.code, msg)
	}
	t.Logf("%s", msg)
}

// TestKernelUblkConformance runs the Source conformance suite over a ublk
// device served from memory, opened as a block-device File: every read,
// write, zero (BLKZEROOUT: write-zeroes), trim (BLKDISCARD: discard) and
// flush goes through /dev/ublkbN, the queues and back. Each sub-test
// starts from a device zeroed with BLKZEROOUT.
func TestKernelUblkConformance(t *testing.T) {
	requireUblk(t)
	const size = 16 << 20
	dev := attachUblk(t, fmt.Sprintf("memory:%d", size))
	sourcetest.RunSparse(t, func(t *testing.T) sources.Source {
		f, err := sources.OpenFile(dev, sources.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Zero(0, size, false); err != nil {
			t.Fatalf("zeroing %s: %v", dev, err)
		}
		return f
	}, size, sourcetest.Zeros{})
	must(t, nbdloop(t), "detach", dev)
}
