//go:build kernel

package kerneltest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/s3test"
)

// TestKernelBucket: a disk in a SeaweedFS bucket is created, attached,
// formatted and written with fio's crc32c verification while the S3
// server is killed and restarted; a second writer is refused, readers are
// not; after a detach, another "machine" (its own state directory)
// attaches it and verifies every block fio wrote.
func TestKernelBucket(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	srv := s3test.Start(t, dir)
	srv.CreateBucket(t, "disks")
	srv.Put(t, "disks", "warm-up", []byte("a fresh server grows its first volume")) // retried
	start := time.Now()
	srv.Put(t, "disks", "speed", make([]byte, 1<<20))
	t.Logf("SeaweedFS stores 1 MiB in %v here", time.Since(start).Round(time.Millisecond))
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	url := "s3://disks/vm/"
	// 64 KiB objects: SeaweedFS in the emulated VM stores a few MiB a
	// second, and the kernel gives up on a request (a flush) after 30 s.
	must(t, nbdloop(t), "create", "--size", "1G", "--object-size", "64K", "s3://disks/vm")
	dev := attachDev(t, url)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", run(t, "tail", "-n", "40", "/run/nbdloop/"+filepath.Base(dev)+".log").stdout)
			if l := srv.Log(); len(l) > 4000 {
				t.Logf("SeaweedFS log, last 4000 bytes:\n%s", l[len(l)-4000:])
			}
		}
	})
	other := filepath.Join(dir, "other-machine")

	// A second writer, from another state directory (another machine), is
	// refused naming the first; a reader is not.
	if r := runState(t, other, "attach", url); r.code == 0 || !strings.Contains(r.stderr, "disk is in use by pid") || !strings.Contains(r.stderr, dev) {
		t.Fatalf("second read-write attach: exit %d, %q; want a refusal naming the holder", r.code, r.stderr)
	}
	if r := runState(t, other, "attach", "-r", url); r.code != 0 {
		t.Fatalf("read-only attach beside the writer: exit %d: %s", r.code, r.stderr)
	} else if r := runState(t, other, "detach", strings.TrimSpace(r.stdout)); r.code != 0 {
		t.Fatalf("detaching the reader: %s", r.stderr)
	}

	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	must(t, "mkfs.ext4", "-q", dev)
	must(t, "mount", dev, mnt)
	fioArgs := []string{"--name=bucket", "--directory=" + mnt, "--size=48M", "--bs=64k", "--rw=randwrite",
		"--ioengine=psync", "--verify=crc32c", "--fsync=16", "--randrepeat=1"}
	fio := exec.Command("fio", append(fioArgs, "--do_verify=1")...)
	out := &strings.Builder{}
	fio.Stdout, fio.Stderr = out, out
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fio.Wait() }()
	waitFor(t, 2*time.Minute, "fio to lay out its file", func() error {
		fi, err := os.Stat(filepath.Join(mnt, "bucket.0.0"))
		if err == nil && fi.Size() == 0 {
			err = os.ErrNotExist
		}
		return err
	})
	srv.Kill(t)
	time.Sleep(5 * time.Second)
	srv.Restart(t)
	var fioErr error
	select {
	case fioErr = <-done:
	case <-time.After(8 * time.Minute):
		fio.Process.Kill()
		t.Fatalf("fio hangs 8 minutes after the S3 server was restarted\n%s", out)
	}
	if fioErr != nil && !strings.Contains(out.String(), "Input/output error") {
		t.Fatalf("fio: %v, and not with EIO:\n%s", fioErr, out)
	}
	if strings.Contains(out.String(), "verify: bad") || strings.Contains(out.String(), "bad magic") {
		t.Fatalf("fio read back other data than it wrote:\n%s", out)
	}
	must(t, "umount", mnt)
	detach(t, dev)
	if fioErr != nil {
		t.Logf("fio failed with EIO while the server was down (allowed): %v", fioErr)
	}

	// Another machine attaches the disk and verifies what fio wrote.
	r := runState(t, other, "attach", url)
	if r.code != 0 {
		t.Fatalf("attach from the second machine: exit %d: %s", r.code, r.stderr)
	}
	dev2 := strings.TrimSpace(r.stdout)
	t.Cleanup(func() { runState(t, other, "detach", "--force", dev2) })
	must(t, "fsck.ext4", "-n", "-f", dev2)
	if fioErr == nil {
		must(t, "mount", dev2, mnt)
		verify := run(t, "fio", append(fioArgs, "--verify_only=1")...)
		must(t, "umount", mnt)
		if verify.code != 0 || strings.Contains(verify.stdout, "verify: bad") {
			t.Fatalf("fio --verify_only on the second machine: exit %d\n%s%s", verify.code, verify.stdout, verify.stderr)
		}
	}
	if r := runState(t, other, "detach", dev2); r.code != 0 {
		t.Fatalf("detach on the second machine: %s", r.stderr)
	}
}

// runState runs nbdloop with its state in dir, as another machine would.
func runState(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(nbdloop(t), args...)
	cmd.Env = append(os.Environ(), "NBDLOOP_STATE_DIR="+dir)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{o.String(), e.String(), code}
}
