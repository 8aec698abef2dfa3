//go:build kernel

package kerneltest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNoDriver runs before the harness loads nbd.ko: attach must fail with
// one clear line, after trying modprobe once, and leave nothing behind.
func TestNoDriver(t *testing.T) {
	if _, err := os.Stat("/sys/module/nbd"); err == nil {
		t.Fatal("the nbd driver is loaded: this test must run before it is")
	}
	r := run(t, nbdloop(t), "attach", "memory:1G")
	if r.code == 0 {
		t.Fatalf("attach without a driver succeeded: %q", r.stdout)
	}
	want := "nbdloop: nbd generic netlink family not found (load the driver: modprobe nbd)"
	if got := strings.TrimSpace(r.stderr); !strings.HasPrefix(got, "nbdloop: ") || !strings.Contains(got, "(load the driver: modprobe nbd)") || strings.Count(got, "\n") != 0 {
		t.Errorf("stderr = %q, want one line like %q", got, want)
	}
	requireClean(t, "attach without a driver")
}

// TestKernelFileExt4 is the losetup scenario: mkfs, mount, write, umount,
// detach, and the files are in the image afterwards (read with debugfs, not
// through nbdloop).
func TestKernelFileExt4(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "disk.img")
	must(t, "truncate", "-s", "128M", img)
	dev := attachDev(t, img)
	if got := must(t, "blockdev", "--getsize64", dev); got != "134217728" {
		t.Errorf("blockdev --getsize64 = %s, want 134217728", got)
	}
	must(t, "mkfs.ext4", "-q", dev)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	must(t, "mount", dev, mnt)
	sh(t, "echo hello nbdloop > "+mnt+"/hello.txt && head -c 3000000 /dev/urandom > "+mnt+"/random.bin && sync")
	wantSum := sha(t, mnt+"/random.bin", 0)
	must(t, "umount", mnt)
	detach(t, dev)
	if got := must(t, "debugfs", "-R", "cat /hello.txt", img); got != "hello nbdloop" {
		t.Errorf("hello.txt in the image after detach = %q, want %q", got, "hello nbdloop")
	}
	must(t, "debugfs", "-R", "dump /random.bin "+dir+"/random.out", img)
	if got := sha(t, dir+"/random.out", 0); got != wantSum {
		t.Errorf("random.bin in the image differs from what was written")
	}
	must(t, "e2fsck", "-fn", img)
	requireClean(t, "after detach")
}

// TestKernelReadOnly: -r makes the device read-only and writes fail, leaving
// the image unchanged.
func TestKernelReadOnly(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "ro.img")
	sh(t, "head -c 4M /dev/urandom > "+img)
	before := sha(t, img, 0)
	dev := attachDev(t, "-r", img)
	if got := must(t, "blockdev", "--getro", dev); got != "1" {
		t.Errorf("blockdev --getro = %s, want 1", got)
	}
	r := run(t, "dd", "if=/dev/zero", "of="+dev, "bs=4096", "count=1", "oflag=direct")
	if r.code == 0 {
		t.Error("dd to a read-only device succeeded")
	}
	// Reads still work and match the file.
	if got, want := sha(t, dev, 0), before; got != want {
		t.Error("device contents differ from the file")
	}
	detach(t, dev)
	if sha(t, img, 0) != before {
		t.Error("read-only attach changed the image")
	}
	// A read-only memory disk refuses writes too.
	dev = attachDev(t, "-r", "memory:16M")
	if r := run(t, "dd", "if=/dev/zero", "of="+dev, "bs=4096", "count=1", "oflag=direct"); r.code == 0 {
		t.Error("dd to a read-only memory device succeeded")
	}
	detach(t, dev)
}

// TestKernelHugeMemory is the paper's example: a 2^63-1 byte RAM disk,
// partitioned, with btrfs on it.
func TestKernelHugeMemory(t *testing.T) {
	requireDriver(t)
	r := run(t, nbdloop(t), "attach", "memory:9223372036854775807")
	if r.code != 0 {
		t.Fatalf("attach memory:2^63-1: %s", r.stderr)
	}
	dev := strings.TrimSpace(r.stdout)
	t.Cleanup(func() { run(t, nbdloop(t), "detach", "--force", dev) })
	if !strings.Contains(r.stderr, "rounded down to 9223372036854775296") {
		t.Errorf("attach did not say the size was rounded down: %q", r.stderr)
	}
	if got := must(t, "blockdev", "--getsize64", dev); got != "9223372036854775296" {
		t.Errorf("blockdev --getsize64 = %s, want 9223372036854775296", got)
	}
	must(t, "sgdisk", "-n", "1", dev)
	part := dev + "p1"
	waitNode(t, part)
	must(t, "mkfs.btrfs", "-q", "-K", part)
	mnt := scratch(t)
	must(t, "mount", part, mnt)
	sh(t, "dd if=/dev/urandom of="+mnt+"/data bs=1M count=8 status=none && sync")
	sum := sha(t, mnt+"/data", 0)
	must(t, "umount", mnt)
	must(t, "mount", part, mnt)
	if sha(t, mnt+"/data", 0) != sum {
		t.Error("data read back from btrfs differs")
	}
	must(t, "umount", mnt)
	detach(t, dev)

	// 8E is clamped to 2^63-1 and then rounded down.
	dev = attachDev(t, "memory:8E")
	if got := must(t, "blockdev", "--getsize64", dev); got != "9223372036854775296" {
		t.Errorf("memory:8E: blockdev --getsize64 = %s, want 9223372036854775296", got)
	}
	detach(t, dev)
	requireClean(t, "huge memory")
}

func waitNode(t *testing.T, path string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
}

// TestKernelPartscan: -P returns only once the partition nodes exist, and a
// later attach to the same device never shows the previous disk's partitions.
func TestKernelPartscan(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "parts.img")
	must(t, "truncate", "-s", "64M", img)
	must(t, "sgdisk", "-n", "1:0:+16M", "-n", "2:0:+16M", "-n", "3:0:0", img)
	dev := attachDev(t, "-r", "--partscan", img)
	for _, p := range []string{"p1", "p2", "p3"} {
		if _, err := os.Stat(dev + p); err != nil {
			t.Errorf("%s%s missing right after attach -P returned", dev, p)
		}
	}
	if got := must(t, "blockdev", "--getsize64", dev+"p2"); got != strconv.Itoa(16<<20) {
		t.Errorf("%sp2 size = %s, want %d", dev, got, 16<<20)
	}
	detach(t, dev)
	if _, err := os.Stat(dev + "p1"); err == nil {
		t.Errorf("%sp1 still exists after detach", dev)
	}
	// The same device, now an unpartitioned disk.
	plain := filepath.Join(dir, "plain.img")
	must(t, "truncate", "-s", "8M", plain)
	dev2 := attachDev(t, "--device", dev, "-P", plain)
	if dev2 != dev {
		t.Fatalf("--device %s attached %s", dev, dev2)
	}
	if m, _ := filepath.Glob(dev + "p*"); len(m) != 0 {
		t.Errorf("attach reported stale partitions %v", m)
	}
	detach(t, dev)
}

// TestKernelListAndDetachAll: list and list --json with two devices, then
// detach -a.
func TestKernelListAndDetachAll(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "list.img")
	must(t, "truncate", "-s", "32M", img)
	d1 := attachDev(t, img)
	d2 := attachDev(t, "-r", "-c", "1", "memory:1G")
	out := must(t, nbdloop(t), "list")
	lines := strings.Split(out, "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("list printed %q, want a header and two devices", out)
	}
	for _, col := range []string{"NAME", "SIZE", "SOURCE", "RO", "PID", "STATE", "CONNECTIONS"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("list header %q lacks %s", lines[0], col)
		}
	}
	if !strings.Contains(out, d1+" ") || !strings.Contains(out, img) || !strings.Contains(out, "32M") {
		t.Errorf("list lacks %s with %s and 32M:\n%s", d1, img, out)
	}
	l := listDevices(t)
	if len(l.Devices) != 2 {
		t.Fatalf("list --json: %d devices, want 2", len(l.Devices))
	}
	byName := map[string]int{}
	for i, d := range l.Devices {
		byName[d.Name] = i
	}
	a, b := l.Devices[byName[d1]], l.Devices[byName[d2]]
	if a.Size != 32<<20 || a.Source != img || a.RO || a.State != "running" || a.PID != serverPID(t, d1) || a.Connections < 1 {
		t.Errorf("list --json %s = %+v", d1, a)
	}
	if b.Size != 1<<30 || b.Source != "memory:1073741824" || !b.RO || b.State != "running" || b.Connections != 1 {
		t.Errorf("list --json %s = %+v", d2, b)
	}
	// Selecting one device.
	if out := must(t, nbdloop(t), "list", d2); strings.Contains(out, d1+" ") || !strings.Contains(out, d2) {
		t.Errorf("list %s printed %q", d2, out)
	}
	must(t, nbdloop(t), "detach", "-a")
	requireClean(t, "detach -a")
	if out := must(t, nbdloop(t), "list", "--json"); !strings.Contains(out, `"devices": []`) {
		t.Errorf("list --json with nothing attached = %q", out)
	}
}

// TestKernelDeadServer: a server without a supervisor (--no-restart) killed
// with SIGKILL shows as dead, and detach frees its device.
func TestKernelDeadServer(t *testing.T) {
	requireDriver(t)
	dev := attachDev(t, "--no-restart", "memory:64M")
	pid := serverPID(t, dev)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && len(serverProcesses(t)) > 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	l := listDevices(t)
	if len(l.Devices) != 1 || l.Devices[0].State != "dead" {
		t.Fatalf("list after kill -9 = %+v, want one dead device", l.Devices)
	}
	if out := must(t, nbdloop(t), "list"); !strings.Contains(out, "dead") {
		t.Errorf("list does not say dead:\n%s", out)
	}
	detach(t, dev)
	requireClean(t, "detach of a dead server")
	if _, err := os.Stat("/run/nbdloop/" + filepath.Base(dev) + ".json"); err == nil {
		t.Error("state record left after detaching a dead server")
	}
	// The device can be used again.
	dev2 := attachDev(t, "--device", dev, "memory:1M")
	detach(t, dev2)
}

// TestKernelSIGTERM: a signalled server flushes, disconnects its device and
// exits.
func TestKernelSIGTERM(t *testing.T) {
	requireDriver(t)
	dev := attachDev(t, "memory:64M")
	pid := serverPID(t, dev)
	syscall.Kill(pid, syscall.SIGTERM)
	requireClean(t, "SIGTERM to the server")
}

// TestKernelRun: --run attaches, runs the command with $DEVICE, detaches and
// exits with the command's status, also when nbdloop is signalled.
func TestKernelRun(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "run.img")
	must(t, "truncate", "-s", "64M", img)
	must(t, nbdloop(t), "attach", "--run", "mkfs.ext4 -q $DEVICE", img)
	requireClean(t, "--run mkfs")
	if got := must(t, "blkid", "-o", "value", "-s", "TYPE", img); got != "ext4" {
		t.Errorf("image type after --run mkfs.ext4 = %q, want ext4", got)
	}
	r := run(t, nbdloop(t), "attach", "--run", "test -b $DEVICE && exit 7", "memory:1M")
	if r.code != 7 {
		t.Errorf("--run 'exit 7': status %d, want 7 (stderr %q)", r.code, r.stderr)
	}
	requireClean(t, "--run exit 7")

	cmd := exec.Command(nbdloop(t), "attach", "--run", "echo $DEVICE; exec sleep 60", "memory:1M")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if !strings.HasPrefix(line, "/dev/nbd") {
		t.Fatalf("--run printed %q, want $DEVICE", line)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Errorf("--run after SIGTERM: %v, want exit status %d", err, 128+int(syscall.SIGTERM))
	}
	requireClean(t, "--run interrupted by SIGTERM")
}

// TestKernelForeground: --foreground serves in the calling process until the
// device is detached or the process is signalled.
func TestKernelForeground(t *testing.T) {
	requireDriver(t)
	for _, stop := range []string{"detach", "SIGINT"} {
		t.Run(stop, func(t *testing.T) {
			cmd := exec.Command(nbdloop(t), "attach", "--foreground", "memory:64M")
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			dev := strings.TrimSpace(line)
			if !strings.HasPrefix(dev, "/dev/nbd") {
				cmd.Process.Kill()
				t.Fatalf("--foreground printed %q", line)
			}
			if got := serverPID(t, dev); got != cmd.Process.Pid {
				t.Errorf("kernel pid = %d, want the foreground process %d", got, cmd.Process.Pid)
			}
			sh(t, "dd if=/dev/urandom of="+dev+" bs=1M count=4 oflag=direct status=none")
			if stop == "detach" {
				must(t, nbdloop(t), "detach", dev)
			} else {
				cmd.Process.Signal(syscall.SIGINT)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("foreground process after %s: %v, want exit 0", stop, err)
				}
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("foreground process did not exit after %s", stop)
			}
			requireClean(t, "foreground "+stop)
		})
	}
}

// TestKernelDetachRefusesMounted: detach names the mount point and refuses,
// --force detaches anyway.
func TestKernelDetachRefusesMounted(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "m.img")
	must(t, "truncate", "-s", "64M", img)
	must(t, "sgdisk", "-n", "1:0:0", img)
	dev := attachDev(t, "-P", img)
	must(t, "mkfs.ext4", "-q", dev+"p1")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	must(t, "mount", dev+"p1", mnt)
	r := run(t, nbdloop(t), "detach", dev)
	if r.code == 0 {
		t.Fatal("detach of a mounted device succeeded")
	}
	if !strings.Contains(r.stderr, "mounted on "+mnt) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("detach of a mounted device: stderr %q, want one line naming %s", r.stderr, mnt)
	}
	if _, err := os.Stat(pidFile(dev)); err != nil {
		t.Error("refused detach disconnected the device anyway")
	}
	must(t, "umount", mnt)
	detach(t, dev)
	requireClean(t, "detach after umount")

	// btrfs mounts show an anonymous device number in mountinfo; the mount
	// point must still be found.
	dev = attachDev(t, "memory:256M")
	must(t, "mkfs.btrfs", "-q", "-f", dev)
	must(t, "mount", dev, mnt)
	if r := run(t, nbdloop(t), "detach", dev); r.code == 0 || !strings.Contains(r.stderr, "mounted on "+mnt) {
		t.Errorf("detach of a mounted btrfs: exit %d, stderr %q", r.code, r.stderr)
	}
	must(t, "umount", mnt)
	detach(t, dev)

	// Swap holds the device exclusively without any mount.
	dev = attachDev(t, "memory:64M")
	must(t, "mkswap", dev)
	must(t, "swapon", dev)
	if r := run(t, nbdloop(t), "detach", dev); r.code == 0 || !strings.Contains(r.stderr, "opened exclusively") {
		t.Errorf("detach of an active swap device: exit %d, stderr %q", r.code, r.stderr)
	}
	must(t, "swapoff", dev)
	detach(t, dev)

	// --force detaches a mounted device (its I/O then fails).
	dev = attachDev(t, "memory:64M")
	must(t, "mkfs.ext4", "-q", dev)
	must(t, "mount", dev, mnt)
	must(t, nbdloop(t), "detach", "--force", dev)
	if len(serverProcesses(t)) != 0 {
		t.Error("server still running after detach --force")
	}
	run(t, "umount", mnt)
	requireClean(t, "detach --force")
}

// TestKernelFileOptions: --offset/--sizelimit windows, --block-size,
// --connections and --direct-io.
func TestKernelFileOptions(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "win.img")
	sh(t, "head -c 8M /dev/urandom > "+img)
	dev := attachDev(t, "-o", "1M", "--sizelimit", "2M", img)
	if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(2<<20) {
		t.Errorf("window size = %s, want %d", got, 2<<20)
	}
	want := sh(t, "dd if="+img+" bs=1M skip=1 count=2 status=none | sha256sum")
	if got := sh(t, "dd if="+dev+" bs=1M status=none | sha256sum"); got != want {
		t.Error("window contents differ from the file's bytes 1M..3M")
	}
	detach(t, dev)

	dev = attachDev(t, "-b", "4096", "-c", "2", img)
	if got := must(t, "blockdev", "--getss", dev); got != "4096" {
		t.Errorf("logical sector size = %s, want 4096", got)
	}
	if l := listDevices(t); len(l.Devices) != 1 || l.Devices[0].Connections != 2 {
		t.Errorf("list after -c 2: %+v", l.Devices)
	}
	detach(t, dev)

	// O_DIRECT needs a file system that supports it: the scratch disk.
	dev = attachDev(t, "--direct-io", img)
	sh(t, "dd if=/dev/urandom of="+dir+"/chunk bs=1M count=1 status=none")
	sh(t, "dd if="+dir+"/chunk of="+dev+" bs=1M seek=3 oflag=direct conv=notrunc status=none")
	detach(t, dev)
	if got, want := sh(t, "dd if="+img+" bs=1M skip=3 count=1 status=none | sha256sum"), sh(t, "sha256sum < "+dir+"/chunk"); got != want {
		t.Error("direct-io write did not reach the file")
	}
	requireClean(t, "file options")
}

// TestKernelMemoryTrim: data written to a RAM disk reads back, and discard
// frees it (the server's resident memory shrinks).
func TestKernelMemoryTrim(t *testing.T) {
	requireDriver(t)
	dev := attachDev(t, "memory:1G")
	pid := serverPID(t, dev)
	mem0 := memfdBytes(t, pid)
	sh(t, "head -c 64M /dev/urandom > /tmp/mt.bin && dd if=/tmp/mt.bin of="+dev+" bs=1M oflag=direct status=none")
	if got, want := sh(t, "head -c 64M "+dev+" | sha256sum"), sh(t, "sha256sum < /tmp/mt.bin"); got != want {
		t.Error("RAM disk data differs")
	}
	mem1 := memfdBytes(t, pid)
	if mem1-mem0 < 64<<20 {
		t.Errorf("the RAM disk grew by %d bytes after writing 64 MiB", mem1-mem0)
	}
	must(t, "blkdiscard", dev)
	if got := sh(t, "head -c 64M "+dev+" | tr -d '\\000' | wc -c"); got != "0" {
		t.Errorf("%s non-zero bytes after blkdiscard", got)
	}
	if mem2 := memfdBytes(t, pid); mem2 > mem0+1<<20 {
		t.Errorf("the RAM disk holds %d bytes after blkdiscard, %d before the writes", mem2, mem0)
	}
	os.Remove("/tmp/mt.bin")
	detach(t, dev)
}

// memfdBytes is the memory a server's RAM disk holds: the blocks allocated
// to its memfd (descriptor 4).
func memfdBytes(t *testing.T, pid int) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(pid)+"/fd/4", &st); err != nil {
		t.Fatalf("the server's memfd: %v", err)
	}
	return st.Blocks * 512
}

// TestKernelErrors: every bad input gets one line, a non-zero exit status,
// and leaves no device and no server process behind.
func TestKernelErrors(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	empty := filepath.Join(dir, "empty.img")
	os.WriteFile(empty, nil, 0o644)
	odd := filepath.Join(dir, "odd.img")
	os.WriteFile(odd, make([]byte, 1000), 0o644)
	good := filepath.Join(dir, "good.img")
	must(t, "truncate", "-s", "1M", good)
	qcow := filepath.Join(dir, "disk.qcow2")
	must(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "1M")
	busy := attachDev(t, "memory:1M")

	tests := []struct {
		name string
		args []string
		want string // substring of the one stderr line
		user bool   // run as an unprivileged user
	}{
		{"not root", []string{"attach", good}, "permission denied (run as root", true},
		{"missing source", []string{"attach", filepath.Join(dir, "nope.img")}, "no such file or directory", false},
		{"unreadable source", []string{"attach", dir}, "is a directory", false},
		{"empty source", []string{"attach", empty}, "empty", false},
		{"not a multiple of the block size", []string{"attach", odd}, "size 1000 is not a multiple of 512 bytes (round it up: truncate -s %512", false},
		{"not a multiple of -b 4096", []string{"attach", "-b", "4096", "memory:1000"}, "smaller than one 4096-byte block", false},
		{"busy device", []string{"attach", "--device", busy, good}, busy + ": device is in use (detach it first", false},
		{"not an nbd device", []string{"attach", "--device", "/dev/sda", good}, "/dev/sda: not an nbd device", false},
		{"bad size syntax", []string{"attach", "memory:12Q"}, `unknown suffix "Q"`, false},
		{"bad block size", []string{"attach", "-b", "1000", good}, "--block-size 1000: must be a power of two from 512 to 4096", false},
		{"bad connections", []string{"attach", "-c", "0", good}, "--connections 0: must be from 1 to 64", false},
		{"bad timeout", []string{"attach", "--timeout", "soon", good}, `--timeout "soon": not a number of seconds`, false},
		{"unknown flag", []string{"attach", "--frobnicate", good}, "flag provided but not defined", false},
		{"offset on memory", []string{"attach", "-o", "512", "memory:1M"}, "apply to files only", false},
		{"direct-io on qcow2", []string{"attach", "--direct-io", qcow}, qcow + ": qcow2 image: --offset, --sizelimit and --direct-io apply to raw and compressed files only (omit them)", false},
		{"offset past a qcow2", []string{"attach", "-o", "1G", qcow}, qcow + ": qcow2 image: --offset, --sizelimit and --direct-io apply to raw and compressed files only (omit them)", false},
		{"offset past the end", []string{"attach", "-o", "1G", good}, good + ": the file (1048576 bytes) is smaller than --offset 1073741824 (give an offset inside the file)", false},
		{"offset on an empty file", []string{"attach", "-o", "1G", empty}, empty + ": empty, no bytes at --offset 1073741824 (truncate it to the size wanted", false},
		{"sizelimit not a multiple", []string{"attach", "--sizelimit", "1000", good}, "--sizelimit 1000: not a multiple of the 512-byte block size (use --sizelimit 512 or --sizelimit 1024)", false},
		{"exec of a directory", []string{"attach", "exec:" + dir}, dir + ": is a directory (exec: runs a program", false},
		{"URL", []string{"attach", "ftp://localhost/disk.img"}, "ftp:// URLs are not supported", false},
		{"nbd server not running", []string{"attach", "nbd://localhost:1/export"}, "connection refused (is the server running?)", false},
		{"options after SOURCE", []string{"attach", good, "-r", "--bogus"}, "flag provided but not defined: -bogus", false},
		{"detach not attached", []string{"detach", "/dev/nbd15"}, "/dev/nbd15: not attached", false},
		{"detach not nbd", []string{"detach", "/dev/loop0"}, "/dev/loop0: not an nbd device", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := attachedDevices(t)
			args := tt.args
			name := nbdloop(t)
			if tt.user {
				name, args = "setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", nbdloop(t)}, args...)
			}
			r := run(t, name, args...)
			if r.code == 0 {
				t.Fatalf("exit status 0, want non-zero (stdout %q)", r.stdout)
			}
			line := strings.TrimRight(r.stderr, "\n")
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "nbdloop: ") || !strings.Contains(line, tt.want) {
				t.Errorf("stderr = %q, want one line starting with \"nbdloop: \" containing %q", r.stderr, tt.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			after := attachedDevices(t)
			if len(after) != len(before) {
				t.Errorf("devices attached before %v, after %v", before, after)
			}
			if p := serverProcesses(t); len(p) != 2 {
				t.Errorf("server and supervisor processes %v, want only the busy device's two", p)
			}
		})
	}
	detach(t, busy)
	requireClean(t, "error cases")
}

// TestKernelForeignDevice: devices attached by other programs (nbdkit +
// nbd-client) are listed as foreign with what sysfs knows, skipped by
// detach -a, and detachable by name.
func TestKernelForeignDevice(t *testing.T) {
	requireDriver(t)
	sock := filepath.Join(scratch(t), "nbdkit.sock")
	nbdkit := exec.Command("nbdkit", "--foreground", "--exit-with-parent", "-U", sock, "memory", "64M")
	if err := nbdkit.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { nbdkit.Process.Kill(); nbdkit.Wait() }()
	waitNode(t, sock)
	must(t, "nbd-client", "-unix", sock, "-N", "", "/dev/nbd9")
	own := attachDev(t, "memory:1M")
	l := listDevices(t)
	var found bool
	for _, d := range l.Devices {
		if d.Name == "/dev/nbd9" {
			found = true
			if d.State != "foreign" || d.Size != 64<<20 || d.PID == 0 {
				t.Errorf("list --json /dev/nbd9 = %+v, want a foreign 64M device with a pid", d)
			}
		}
	}
	if !found {
		t.Fatalf("list --json lacks the nbd-client device: %+v", l.Devices)
	}
	must(t, nbdloop(t), "detach", "-a")
	if _, err := os.Stat(pidFile("/dev/nbd9")); err != nil {
		t.Error("detach -a detached a foreign device")
	}
	if _, err := os.Stat(pidFile(own)); err == nil {
		t.Errorf("detach -a left %s attached", own)
	}
	must(t, nbdloop(t), "detach", "/dev/nbd9")
	if _, err := os.Stat(pidFile("/dev/nbd9")); err == nil {
		t.Error("detach of a foreign device left it attached")
	}
	requireClean(t, "foreign device")
}

// TestKernelBlockDeviceSource: a block device as SOURCE is sized with
// BLKGETSIZE64, and writes, discards and zeroes reach it.
func TestKernelBlockDeviceSource(t *testing.T) {
	requireDriver(t)
	lower := attachDev(t, "memory:64M")
	upper := attachDev(t, lower)
	if got := must(t, "blockdev", "--getsize64", upper); got != strconv.Itoa(64<<20) {
		t.Errorf("size of an nbd device over %s = %s, want %d", lower, got, 64<<20)
	}
	sh(t, "head -c 4M /dev/urandom > /tmp/bd.bin && dd if=/tmp/bd.bin of="+upper+" bs=1M seek=2 oflag=direct status=none")
	if got, want := sh(t, "dd if="+lower+" bs=1M skip=2 count=4 iflag=direct status=none | sha256sum"), sh(t, "sha256sum < /tmp/bd.bin"); got != want {
		t.Error("data written through the upper device differs on the lower one")
	}
	must(t, "blkdiscard", "-z", "-o", "2097152", "-l", "1048576", upper)
	if got := sh(t, "dd if="+lower+" bs=1M skip=2 count=1 iflag=direct status=none | tr -d '\\000' | wc -c"); got != "0" {
		t.Errorf("%s non-zero bytes on the lower device after blkdiscard -z on the upper", got)
	}
	must(t, "blkdiscard", upper)
	os.Remove("/tmp/bd.bin")
	detach(t, upper)
	detach(t, lower)
	requireClean(t, "block device source")
}

// TestKernelTimeout: --timeout reaches the kernel as the request timeout.
func TestKernelTimeout(t *testing.T) {
	requireDriver(t)
	dev := attachDev(t, "--timeout", "45", "--dead-timeout", "2m", "memory:1M")
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "queue/io_timeout"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "45000" {
		t.Errorf("queue/io_timeout = %s ms, want 45000", got)
	}
	for file, want := range map[string]string{"scheduler": "[none]", "max_sectors_kb": "1024"} {
		b, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "queue", file))
		if got := strings.TrimSpace(string(b)); !strings.Contains(got, want) {
			t.Errorf("queue/%s = %q, want %q", file, got, want)
		}
	}
	detach(t, dev)
}
