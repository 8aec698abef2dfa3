//go:build kernel

package kerneltest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestKernelProbeGuard: a guest that writes a VMDK descriptor or a qcow2
// header naming a host file to sector 0 of a raw device gets an error, and
// neither a restart nor a new attach opens that file: the device stays raw
// with its old first sector. With --format raw the same writes land and are
// served as data, and the named file is never opened.
func TestKernelProbeGuard(t *testing.T) {
	requireDriver(t)
	top := scratch(t)
	dir, hostDir := filepath.Join(top, "images"), filepath.Join(top, "host")
	os.Mkdir(dir, 0o755)
	os.Mkdir(hostDir, 0o755)
	canary := filepath.Join(hostDir, "secret")
	sh(t, "head -c 1M /dev/urandom > "+canary)
	canarySum := sha(t, canary, 0)

	qcow2Hdr := filepath.Join(dir, "evil.qcow2")
	must(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", canary, "-F", "raw", qcow2Hdr, "1M")
	vmdkHdr := filepath.Join(dir, "evil.vmdk")
	desc := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n" +
		"RW 2048 FLAT \"" + canary + "\" 0\n\nddb.virtualHWVersion = \"4\"\n"
	if err := os.WriteFile(vmdkHdr, []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	// Whole 64 KiB blocks, for dd oflag=direct.
	must(t, "truncate", "-s", "%64K", qcow2Hdr, vmdkHdr)
	watch := watchOpens(t, hostDir) // after qemu-img, which reads the canary

	for _, tt := range []struct{ name, header string }{{"vmdk descriptor", vmdkHdr}, {"qcow2 header", qcow2Hdr}} {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(dir, "raw.img")
			sh(t, "head -c 8M /dev/urandom > "+img)
			headSum := sha(t, img, 4096)

			dev := attachDev(t, img)
			if r := run(t, "dd", "if="+tt.header, "of="+dev, "bs=64K", "oflag=direct", "conv=notrunc", "status=none"); r.code == 0 {
				t.Fatalf("writing a %s to sector 0 of a probed-raw device succeeded", tt.name)
			}
			logFile := filepath.Join(stateDir(), strings.TrimPrefix(dev, "/dev/")+".log")
			waitForFile(t, logFile, "refused with EPERM")
			if got := sha(t, dev, 4096); got != headSum {
				t.Error("the device's first sector changed")
			}
			must(t, nbdloop(t), "restart", dev)
			if got := sha(t, dev, 4096); got != headSum {
				t.Error("after restart: the device's first sector is not the raw image's")
			}
			detach(t, dev)
			dev = attachDev(t, img)
			if got := sha(t, dev, 4096); got != headSum {
				t.Error("after a new attach: the device's first sector is not the raw image's")
			}
			detach(t, dev)

			// --format raw: the guest may write what it likes.
			dev = attachDev(t, "--format", "raw", img)
			must(t, "dd", "if="+tt.header, "of="+dev, "bs=64K", "oflag=direct", "conv=notrunc", "status=none")
			hdrSum := sha(t, tt.header, 4096)
			if got := sha(t, dev, 4096); got != hdrSum {
				t.Error("--format raw: the written header does not read back")
			}
			must(t, nbdloop(t), "restart", dev)
			if got := sha(t, dev, 4096); got != hdrSum {
				t.Error("--format raw, after restart: the written header does not read back")
			}
			detach(t, dev)
			// A plain attach of the file now probes the image it holds,
			// which is confined to its directory: the host file is
			// refused (qcow2: naming it; the VMDK descriptor of an 8 MiB
			// file is refused before its extents are read).
			r := run(t, nbdloop(t), "attach", img)
			if r.code == 0 {
				run(t, nbdloop(t), "detach", strings.TrimSpace(r.stdout))
				t.Errorf("attach of a raw file holding a %s naming %s succeeded", tt.name, canary)
			} else if tt.name == "qcow2 header" && (!strings.Contains(r.stderr, canary) || !strings.Contains(r.stderr, "--allow-path")) {
				t.Errorf("attach of a %s naming a host file: %q, want the path and --allow-path named", tt.name, r.stderr)
			}
			if got := watch(); len(got) > 0 {
				t.Errorf("files in %s were opened: %q", hostDir, got)
			}
			if sha(t, canary, 0) != canarySum {
				t.Fatal("the host file changed")
			}
			watch() // our own read
			requireClean(t, tt.name)
		})
	}
}

func stateDir() string {
	if d := os.Getenv("NBDLOOP_STATE_DIR"); d != "" {
		return d
	}
	return "/run/nbdloop"
}

// waitForFile waits up to 5 s for path to contain want.
func waitForFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not say %q:\n%s", path, want, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchOpens watches dir with inotify; the function it returns gives the
// names of the files in dir opened, read or written since its last call.
func watchOpens(t *testing.T, dir string) func() []string {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_OPEN|unix.IN_ACCESS|unix.IN_MODIFY); err != nil {
		t.Fatal(err)
	}
	return func() []string {
		var names []string
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.Read(fd, buf)
			if n <= 0 || err != nil {
				return names
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				names = append(names, string(bytes.TrimRight(name, "\x00")))
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}
}
