//go:build kernel

package kerneltest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// deviceInfo returns dev's entry in `list --json`.
func deviceInfo(t *testing.T, dev string) (d struct {
	PID, Supervisor, Restarts int
	State, LastExit, Reason   string
}) {
	t.Helper()
	for _, e := range listDevices(t).Devices {
		if e.Name == dev {
			d.PID, d.Supervisor, d.Restarts = e.PID, e.Supervisor, e.Restarts
			d.State, d.LastExit, d.Reason = e.State, e.LastExit, e.Reason
			return d
		}
	}
	t.Fatalf("%s is not in list --json", dev)
	return d
}

// waitDead waits until list shows dev dead: its server and supervisor are
// gone.
func waitDead(t *testing.T, dev string) {
	t.Helper()
	waitFor(t, 10*time.Second, "list to show "+dev+" dead", func() error {
		if d := deviceInfo(t, dev); d.State != "dead" {
			return fmt.Errorf("list says %s", d.State)
		}
		return nil
	})
}

// directOpen says whether a child of pid has a file under dir open with
// O_DIRECT.
func directOpen(t *testing.T, pid int, dir string) bool {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// After the command in parentheses: the state, then the parent.
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		for _, fd := range fds {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p, fd.Name())); !strings.HasPrefix(l, dir+"/") {
				continue
			}
			info, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", p, fd.Name()))
			for _, line := range strings.Split(string(info), "\n") {
				if v, ok := strings.CutPrefix(line, "flags:"); ok {
					if flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64); err == nil && flags&syscall.O_DIRECT != 0 {
						return true
					}
				}
			}
		}
	}
	return false
}

// mountedExt4 attaches a new image file of the given size, makes ext4 on
// it and mounts it; it returns the device and the mount point, unmounted at
// cleanup. A mount that is still busy then (a failed test left a program
// blocked on the device) is detached lazily: the device's forced detach,
// the next cleanup, ends the blocked I/O, the file system goes with its
// last user, and the tests after this one find no device left behind.
func mountedExt4(t *testing.T, size string) (dev, mnt string) {
	t.Helper()
	dir := scratch(t)
	img := filepath.Join(dir, "ext4.img")
	must(t, "truncate", "-s", size, img)
	dev = attachDev(t, img)
	must(t, "mkfs.ext4", "-q", dev)
	mnt = filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	must(t, "mount", dev, mnt)
	t.Cleanup(func() {
		if r := run(t, "umount", mnt); r.code != 0 {
			run(t, "umount", "-l", mnt)
		}
	})
	return dev, mnt
}

// killServer kills dev's server with SIGKILL, waits until a new server runs
// and returns the time from the kill until a 4 KiB direct read at a random
// offset was served: the restart gap a program on the device sees.
func killServer(t *testing.T, dev string, size int64) time.Duration {
	t.Helper()
	before := deviceInfo(t, dev)
	if before.State != "running" {
		t.Fatalf("%s is %s before the kill, want running", dev, before.State)
	}
	t0 := time.Now()
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	skip := rand.Int63n(size / 4096)
	must(t, "dd", "if="+dev, "of=/dev/null", "bs=4k", "count=1", "iflag=direct", fmt.Sprintf("skip=%d", skip), "status=none")
	gap := time.Since(t0)
	deadline := time.Now().Add(20 * time.Second)
	for {
		d := deviceInfo(t, dev)
		if d.State == "running" && d.PID != before.PID {
			if d.Restarts != before.Restarts+1 || !strings.Contains(d.LastExit, "signal 9") {
				t.Errorf("after kill -9: restarts %d (was %d), last exit %q; want one more, killed by signal 9", d.Restarts, before.Restarts, d.LastExit)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no new server 20 s after kill -9 (state %s, reason %q)", dev, d.State, d.Reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return gap
}

// TestKernelRestartFio: ext4 on a file device; fio writes with crc32c
// checksums and fsync while the server is killed twice; the run completes
// without an I/O error, every block verifies, e2fsck finds the file system
// clean and list counts two restarts.
func TestKernelRestartFio(t *testing.T) {
	requireDriver(t)
	dev, mnt := mountedExt4(t, "512M")

	fio := exec.Command("fio", "--name=verify", "--directory="+mnt, "--size=64M", "--bs=4k",
		"--rw=randwrite", "--direct=1", "--ioengine=psync", "--fsync=32", "--verify=crc32c",
		"--do_verify=1", "--verify_fatal=1",
		// Writes at a set pace, so that both kills land in the write phase
		// on slow and fast machines alike (about 80 s).
		"--rate_iops=,300")
	out := &strings.Builder{}
	fio.Stdout, fio.Stderr = out, out
	// Its own process group: fio runs the job in a child, which a kill of
	// fio alone would leave writing to the mount.
	fio.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fio.Wait() }()
	for i := 0; i < 2; i++ {
		if i == 0 {
			// The first kill comes once fio is in its write phase: its
			// job (a child process) lays the file out with buffered
			// writes, then opens it for its direct writes.
			waitFor(t, 2*time.Minute, "fio to start its direct writes", func() error {
				if !directOpen(t, fio.Process.Pid, mnt) {
					return errors.New("fio's job has no file open with O_DIRECT")
				}
				return nil
			})
		} else {
			// Not synchronization: the second kill comes after the
			// kernel's 30 s request timer has resent what the first kill
			// left inside the dead server: a kill within that window once
			// left a request unanswered (kernel 6.1).
			time.Sleep(35 * time.Second)
		}
		select {
		case err := <-done:
			t.Fatalf("fio ended before kill %d (%v): make its run longer\n%s", i+1, err, out)
		default:
		}
		gap := killServer(t, dev, 512<<20)
		t.Logf("kill %d: a new 4 KiB read was served %v after kill -9", i+1, gap.Round(time.Millisecond))
	}
	// A loaded machine makes fio slow (a write phase of 5 minutes and
	// more under TCG at a load of 10), not stuck: what fails the test is
	// the device completing nothing for longer than the kernel takes to
	// resend a request the dead server took (its 30 s timer, then up to the
	// 30 s dead-connection timeout).
	stuck, err := awaitProgress(dev, done, 2*time.Minute, 20*time.Minute)
	if stuck != "" {
		syscall.Kill(-fio.Process.Pid, syscall.SIGKILL)
		n := strings.TrimPrefix(dev, "/dev/")
		logTail := run(t, "tail", "-n", "30", "/run/nbdloop/"+n+".log")
		t.Fatalf("fio did not finish: %s\n%s\nserver log:\n%s", stuck, out, logTail.stdout)
	}
	if err != nil {
		t.Fatalf("fio: %v\n%s", err, out)
	}
	if strings.Contains(out.String(), "verify") && strings.Contains(out.String(), "bad") {
		t.Errorf("fio reports bad blocks:\n%s", out)
	}
	must(t, "umount", mnt)
	if r := run(t, "e2fsck", "-fn", dev); r.code != 0 {
		t.Errorf("e2fsck -fn after two restarts: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if d := deviceInfo(t, dev); d.Restarts != 2 {
		t.Errorf("list: %d restarts, want 2", d.Restarts)
	}
	if out := must(t, nbdloop(t), "list", dev); !strings.Contains(out, "RESTARTS") {
		t.Errorf("list has no RESTARTS column:\n%s", out)
	}
	detach(t, dev)
	requireClean(t, "restart fio")
}

// awaitProgress waits for done while dev completes reads or writes. It
// returns why it stopped waiting, or "" and what done brought: no request of dev
// completed for stall (with the requests then in flight), or done did not
// come within limit.
func awaitProgress(dev string, done <-chan error, stall, limit time.Duration) (string, error) {
	n := strings.TrimPrefix(dev, "/dev/")
	end := time.Now().Add(limit)
	last, lastChange := completedIOs(n), time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return "", err
		case now := <-tick.C:
			if c := completedIOs(n); c != last {
				last, lastChange = c, now
			}
			inflight, _ := os.ReadFile("/sys/block/" + n + "/inflight")
			switch {
			case now.Sub(lastChange) > stall:
				return fmt.Sprintf("%s completed no request for %v (in flight: %s; %d completed in all)", dev, stall, strings.Join(strings.Fields(string(inflight)), " "), last), nil
			case now.After(end):
				return fmt.Sprintf("not done within %v, though %s still completes requests (%d in all)", limit, dev, last), nil
			}
		}
	}
}

// completedIOs is the number of reads and writes the block device n has
// completed (/sys/block/n/stat), -1 if unreadable.
func completedIOs(n string) int64 {
	b, err := os.ReadFile("/sys/block/" + n + "/stat")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 5 {
		return -1
	}
	r, err1 := strconv.ParseInt(f[0], 10, 64)
	w, err2 := strconv.ParseInt(f[4], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return r + w
}

// TestKernelRestartMemory: a RAM disk keeps its contents when its server is
// killed (the supervisor holds the memfd); writes work afterwards.
func TestKernelRestartMemory(t *testing.T) {
	requireDriver(t)
	dev := attachDev(t, "memory:64M")
	sh(t, "head -c 16M /dev/urandom > /tmp/rm.bin && dd if=/tmp/rm.bin of="+dev+" bs=1M oflag=direct status=none")
	defer os.Remove("/tmp/rm.bin")
	want := sh(t, "sha256sum < /tmp/rm.bin")
	gap := killServer(t, dev, 64<<20)
	t.Logf("restart gap (idle RAM disk): %v from kill -9 to a served 4 KiB read", gap.Round(time.Millisecond))
	if got := sh(t, "dd if="+dev+" bs=1M count=16 iflag=direct status=none | sha256sum"); got != want {
		t.Error("RAM disk contents changed across a server restart")
	}
	sh(t, "dd if=/tmp/rm.bin of="+dev+" bs=1M seek=32 oflag=direct status=none")
	if got := sh(t, "dd if="+dev+" bs=1M skip=32 count=16 iflag=direct status=none | sha256sum"); got != want {
		t.Error("write after the restart does not read back")
	}
	detach(t, dev)
	requireClean(t, "restart memory")
}

// TestKernelRestartByHand: a writer appends numbered records to a file on
// ext4 with fsync after each; the server and its supervisor are killed at a
// random moment and `nbdloop restart` brings the device back: every record
// whose fsync returned is in the file, and the file system is clean.
func TestKernelRestartByHand(t *testing.T) {
	requireDriver(t)
	dev, mnt := mountedExt4(t, "128M")

	path := filepath.Join(mnt, "records")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	acked.Store(-1)
	ctx, stop := context.WithCancel(context.Background())
	werr := make(chan error, 1)
	go func() {
		for i := int64(0); ctx.Err() == nil; i++ {
			if _, err := fmt.Fprintf(f, "record %08d\n", i); err != nil {
				werr <- err
				return
			}
			if err := f.Sync(); err != nil {
				werr <- err
				return
			}
			acked.Store(i)
		}
		werr <- nil
	}()
	// Not synchronization: the kill lands at a random moment of the
	// writer's run, on purpose (in a write, an fsync or between them).
	time.Sleep(time.Duration(300+rand.Intn(1200)) * time.Millisecond)
	d := deviceInfo(t, dev)
	if d.Supervisor == 0 {
		t.Fatal("list shows no supervisor")
	}
	syscall.Kill(d.Supervisor, syscall.SIGKILL)
	syscall.Kill(d.PID, syscall.SIGKILL)
	killedAt := acked.Load()
	waitDead(t, dev)
	r := run(t, nbdloop(t), "restart", dev)
	if r.code != 0 || !strings.Contains(r.stdout, "restarted") {
		t.Fatalf("nbdloop restart: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	// Wait for a record fsynced through the new server. A request that
	// the kill left inside the dead server is sent again when the
	// kernel's 30 s request timer fires, so the writer may wait that long.
	restartedAt := acked.Load()
	var writerErr error
	writerDone := false
	waitFor(t, 2*time.Minute, "a record fsynced after the restart", func() error {
		select {
		case writerErr = <-werr:
			writerDone = true
			return nil
		default:
		}
		if n := acked.Load(); n <= restartedAt {
			return fmt.Errorf("the last record fsynced is %d, as when restart returned", n)
		}
		return nil
	})
	stop()
	if !writerDone {
		writerErr = <-werr
	}
	if writerErr != nil {
		t.Fatalf("the writer failed across the restart: %v", writerErr)
	}
	f.Close()
	last := acked.Load()
	if last <= killedAt {
		t.Errorf("no record acknowledged after the restart (%d before the kill, %d at the end)", killedAt, last)
	}
	rf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(rf)
	var n int64
	for sc.Scan() {
		if want := fmt.Sprintf("record %08d", n); sc.Text() != want {
			t.Fatalf("line %d = %q, want %q", n, sc.Text(), want)
		}
		n++
	}
	rf.Close()
	if n <= last {
		t.Errorf("the file holds %d records, but %d were fsynced", n, last+1)
	}
	t.Logf("%d records fsynced before the kill, %d in all", killedAt+1, last+1)
	must(t, "umount", mnt)
	if r := run(t, "e2fsck", "-fn", dev); r.code != 0 {
		t.Errorf("e2fsck -fn: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if d := deviceInfo(t, dev); d.Restarts != 1 || d.Supervisor == 0 || !strings.Contains(d.LastExit, "by hand") {
		t.Errorf("after restart: %+v, want 1 restart by hand under a new supervisor", d)
	}
	detach(t, dev)
	requireClean(t, "restart by hand")
}

// TestKernelRestartGivesUp: a server that fails on every start (its image
// is gone) is restarted a few times, then the device is left dead with the
// reason in list; detach frees it and no process is left.
func TestKernelRestartGivesUp(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "gone.img")
	must(t, "truncate", "-s", "16M", img)
	dev := attachDev(t, img)
	os.Remove(img)
	d := deviceInfo(t, dev)
	syscall.Kill(d.PID, syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for {
		d = deviceInfo(t, dev)
		if d.State == "dead" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s 30 s after the image vanished", d.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(d.Reason, "5 times") || !strings.Contains(d.Reason, "gone.img") {
		t.Errorf("dead reason = %q, want the number of tries and the missing image", d.Reason)
	}
	if r := run(t, nbdloop(t), "list"); !strings.Contains(r.stdout, "dead") {
		t.Errorf("list does not say dead:\n%s", r.stdout)
	}
	detach(t, dev)
	requireClean(t, "a server that cannot restart")
}
