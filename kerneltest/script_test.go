//go:build kernel

package kerneltest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// example returns the path of a program in scripts/examples: the kernel
// tests run from the repository's root (scripts/kernel-tests.sh).
func example(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("scripts/examples", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v (run the kernel tests from the repository's root)", err)
	}
	return p
}

func writeExec(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// nbdkitClient serves args with nbdkit on a Unix socket and connects dev to
// it with nbd-client; cleanup disconnects and stops nbdkit.
func nbdkitClient(t *testing.T, dev string, args ...string) {
	t.Helper()
	sock := filepath.Join(scratch(t), "nbdkit.sock")
	cmd := exec.Command("nbdkit", append([]string{"--foreground", "--exit-with-parent", "-U", sock}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			run(t, "nbd-client", "-d", dev)
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	// nbdkit listens only after running the script's load, config,
	// config_complete, thread_model and get_ready: forks that take seconds
	// each under emulation.
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 1200 {
			t.Fatalf("nbdkit %s: no socket after 120 s", strings.Join(args, " "))
		}
		time.Sleep(100 * time.Millisecond)
	}
	must(t, "nbd-client", "-unix", sock, "-N", "", dev)
}

// TestKernelScriptMatchesNbdkit is the paper's shell RAM disk
// (scripts/examples/ramdisk.sh) served by nbdkit's sh plugin + nbd-client,
// by nbdloop (exec:, nbdkit mode), and a persistent-mode program
// (file-persistent.py): each over its own copy of the same file. Reads give
// identical bytes; the same writes, discards and zeroing leave identical
// devices and identical files.
func TestKernelScriptMatchesNbdkit(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := func(n string) string { return filepath.Join(dir, n) }
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	sh(t, "head -c 4M /dev/urandom > "+img("a.img")+" && cp "+img("a.img")+" "+img("b.img")+" && cp "+img("a.img")+" "+img("c.img"))
	ramdisk := example(t, "ramdisk.sh")
	const foreign = "/dev/nbd12"
	nbdkitClient(t, foreign, "sh", ramdisk, "file="+img("a.img"))
	step("nbdkit sh + nbd-client connected")
	execDev := attachDev(t, "exec:"+ramdisk+",file="+img("b.img"))
	step("exec: attached")
	// python3 alone takes half a minute to start under emulation on a
	// loaded machine: a timeout long enough for the first request.
	persDev := attachDev(t, "exec:"+example(t, "file-persistent.py")+",persistent,timeout=10m,file="+img("c.img"))
	step("exec:...,persistent attached")
	devs := []string{foreign, execDev, persDev}
	for _, d := range devs {
		if got := must(t, "blockdev", "--getsize64", d); got != strconv.Itoa(4<<20) {
			t.Fatalf("%s: size %s, want %d", d, got, 4<<20)
		}
	}
	sameDevices := func(what string) {
		t.Helper()
		want := sh(t, "dd if="+devs[0]+" bs=1M iflag=direct status=none | sha256sum")
		for _, d := range devs[1:] {
			if got := sh(t, "dd if="+d+" bs=1M iflag=direct status=none | sha256sum"); got != want {
				t.Errorf("%s: %s reads %s, nbdkit's %s reads %s", what, d, got, devs[0], want)
			}
		}
	}
	sameDevices("before writes")
	step("read")
	if got, want := sh(t, "dd if="+execDev+" bs=1M iflag=direct status=none | sha256sum"), sh(t, "sha256sum < "+img("a.img")); got != want {
		t.Errorf("%s reads %s, its file %s", execDev, got, want)
	}

	sh(t, "head -c 1M /dev/urandom > "+img("w.bin")+" && head -c 4096 /dev/urandom > "+img("w4k.bin"))
	for _, d := range devs {
		sh(t, "dd if="+img("w.bin")+" of="+d+" bs=1M seek=2 oflag=direct conv=notrunc status=none"+
			" && dd if="+img("w4k.bin")+" of="+d+" bs=4096 seek=7 oflag=direct conv=notrunc status=none"+
			" && dd if="+img("w.bin")+" of="+d+" bs=512 seek=6001 count=3 oflag=direct conv=notrunc status=none")
		// Zeroing: the kernel sends WRITE_ZEROES where the server offers
		// it and writes zeros itself elsewhere.
		sh(t, "blkdiscard -z -o 1M -l 256K "+d)
	}
	step("written")
	sameDevices("after writes")
	step("read again")
	sh(t, "sync")

	// Detach all three, then the files must be identical too.
	for _, d := range devs[1:] {
		detach(t, d)
	}
	must(t, "nbd-client", "-d", foreign)
	a := sha(t, img("a.img"), 0)
	for _, n := range []string{"b.img", "c.img"} {
		if got := sha(t, img(n), 0); got != a {
			t.Errorf("%s differs from nbdkit's a.img after the same writes", n)
		}
	}
	if got, want := sha(t, img("a.img"), 0), sh(t, "cp "+img("a.img")+" "+img("x")+" && dd if="+img("w.bin")+" of="+img("x")+" bs=1M seek=2 conv=notrunc status=none && sha256sum < "+img("x")); got == strings.Fields(want)[0] {
		t.Errorf("a.img equals a copy with only the first write applied: the other writes are missing")
	}
	requireClean(t, "script devices")
}

// failingScripts are an nbdkit-mode script and a persistent one serving
// 16 MiB of zeros that answer every modifying request with ENOSPC and hang
// on reads past 8 MiB (writing the pids of their sleeps to $PIDS).
func failingScripts(t *testing.T, dir string) (execPath, persistentPath string) {
	pids := filepath.Join(dir, "pids")
	execPath = writeExec(t, dir, "full.sh", fmt.Sprintf(`pids=%q
case "$1" in
get_size) echo 16M ;;
can_write|can_zero|can_trim|can_flush) exit 0 ;;
pread)
	if [ "$4" -ge 8388608 ]; then sleep 600 & echo $! >> "$pids"; wait; fi
	head -c "$3" /dev/zero ;;
pwrite|zero|trim) cat > /dev/null; echo "ENOSPC the script is full" >&2; exit 1 ;;
*) exit 2 ;;
esac
`, pids))
	persistentPath = writeExec(t, dir, "full-persistent.sh", fmt.Sprintf(`pids=%q
while read -r cmd count off flags; do
case "$cmd" in
get_size) echo "0 16777216" ;;
can_write|can_zero|can_trim|can_flush) echo 0 ;;
pread)
	if [ "$off" -ge 8388608 ]; then sleep 600 & echo $! >> "$pids"; wait; fi
	echo 0; head -c "$count" /dev/zero ;;
pwrite) dd of=/dev/null bs="$count" count=1 iflag=fullblock status=none; echo "1 ENOSPC the script is full" ;;
zero|trim) echo "1 ENOSPC the script is full" ;;
*) echo 2 ;;
esac
done
`, pids))
	return execPath, persistentPath
}

// TestKernelScriptENOSPC: a script that answers ENOSPC to writes fails the
// kernel's write, and the NBD error the kernel receives is ENOSPC (28).
// The Linux driver reports every NBD error to its caller as EIO, so dd
// says "Input/output error"; the errno shows in the kernel log.
func TestKernelScriptENOSPC(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	execPath, persistentPath := failingScripts(t, dir)
	for _, spec := range []string{"exec:" + execPath, "exec:" + persistentPath + ",persistent"} {
		t.Run(filepath.Base(strings.Split(spec, ",")[0]), func(t *testing.T) {
			dev := attachDev(t, spec)
			r := run(t, "dd", "if=/dev/zero", "of="+dev, "bs=4096", "count=1", "oflag=direct", "status=none")
			if r.code == 0 {
				t.Fatalf("dd to %s succeeded, want a write error", dev)
			}
			if !strings.Contains(r.stderr, "Input/output error") && !strings.Contains(r.stderr, "No space left on device") {
				t.Errorf("dd: %s, want an I/O or no-space error", r.stderr)
			}
			name := filepath.Base(dev)
			if log := sh(t, "dmesg | grep '"+name+": Other side returned error' | tail -3 || true"); !strings.Contains(log, "error (28)") {
				t.Errorf("kernel log for %s: %q, want \"Other side returned error (28)\" (ENOSPC)", name, log)
			}
			// Reads still work.
			if got := sh(t, "dd if="+dev+" bs=4096 count=16 iflag=direct status=none | od -An -tx1 | sort -u | tr -d ' '"); got != "00000000000000000000000000000000\n*" && got != "*\n00000000000000000000000000000000" {
				t.Errorf("reads of %s = %q, want zeros", dev, got)
			}
			detach(t, dev)
		})
	}
	requireClean(t, "ENOSPC scripts")
}

// TestKernelScriptHang: a script that hangs on a read is killed (its
// process group, the sleep it started included) after timeout= (10s: a
// fork costs up to a second under emulation), the
// kernel's read fails with EIO within it, later requests work, and
// `nbdloop detach` works.
func TestKernelScriptHang(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	execPath, persistentPath := failingScripts(t, dir)
	pids := filepath.Join(dir, "pids")
	for _, spec := range []string{"exec:" + execPath + ",timeout=10s", "exec:" + persistentPath + ",persistent,timeout=10s"} {
		t.Run(filepath.Base(strings.Split(spec, ",")[0]), func(t *testing.T) {
			os.Remove(pids)
			dev := attachDev(t, spec)
			start := time.Now()
			r := run(t, "dd", "if="+dev, "of=/dev/null", "bs=4096", "skip=3000", "count=1", "iflag=direct", "status=none")
			took := time.Since(start)
			if r.code == 0 || !strings.Contains(r.stderr, "Input/output error") {
				t.Errorf("dd from the hanging range: exit %d, %q; want an I/O error", r.code, r.stderr)
			}
			if took < 10*time.Second || took > 60*time.Second {
				t.Errorf("the failed read took %v, want the 10s timeout (and not much more)", took)
			}
			b, _ := os.ReadFile(pids)
			sleeps := strings.Fields(string(b))
			if len(sleeps) == 0 {
				t.Fatal("the script recorded no sleep: it did not hang")
			}
			for _, p := range sleeps {
				if st, err := os.ReadFile("/proc/" + p + "/stat"); err == nil && !strings.Contains(string(st), ") Z") {
					t.Errorf("the hanging script's sleep (pid %s) is still running: %s", p, st)
				}
			}
			if got := sh(t, "dd if="+dev+" bs=4096 count=4 iflag=direct status=none | wc -c"); got != "16384" {
				t.Errorf("a read after the timeout gave %s bytes, want 16384", got)
			}
			detach(t, dev)
		})
	}
	requireClean(t, "hanging scripts")
}
