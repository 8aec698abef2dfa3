//go:build kernel

package kerneltest

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/nginxtest"
)

// served serves the files of the directory it returns with nginx, whose
// prefix is beneath the scratch directory dir.
func served(t *testing.T, dir string) *nginxtest.Server {
	t.Helper()
	prefix := filepath.Join(dir, "nginx")
	if err := os.Mkdir(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	return nginxtest.Start(t, prefix)
}

// servedImage makes the partitioned ext4 disk of partitionedExt4,
// compressed as a cloud image is (xz in 1 MiB blocks), and serves it with
// nginx from the scratch directory dir. It returns the image's URL, the
// uncompressed disk's sha256, the files' sha256 by name, and the path
// nginx serves the image from.
func servedImage(t *testing.T, dir string) (url, diskSum string, files map[string]string, path string) {
	t.Helper()
	img, files := partitionedExt4(t, dir)
	diskSum = sha(t, img, 0)
	ng := served(t, dir)
	path = filepath.Join(ng.Root, "disk.img.xz")
	sh(t, "xz -0 -T2 --block-size=1MiB -c "+img+" > "+path)
	os.Remove(img)
	return ng.URL + "/disk.img.xz", diskSum, files, path
}

// TestKernelHTTP is the cloud image: an xz-compressed partitioned
// disk on a web server (nginx), attached by URL with -P (read-only
// implied), its ext4 partition mounted read-only and the files verified;
// the device reads as the uncompressed disk.
func TestKernelHTTP(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	start := time.Now()
	url, diskSum, files, _ := servedImage(t, dir)
	t.Logf("image made and served in %v", time.Since(start))
	start = time.Now()
	dev, stderr := attachStderr(t, "-P", url)
	t.Logf("attached in %v", time.Since(start))
	if !strings.Contains(stderr, "read-only: attached read-only") {
		t.Errorf("attach stderr = %q, want the read-only note", stderr)
	}
	checkCloudImage(t, dev, url, dir, files, diskSum)
}

// checkCloudImage checks dev, the partitioned ext4 disk of
// partitionedExt4 (files, and diskSum the whole disk's sha256) attached
// read-only with -P from source: its first partition mounted read-only
// holds the files, the device reads as the disk, list shows it read-only
// from source. Then it detaches dev.
func checkCloudImage(t *testing.T, dev, source, dir string, files map[string]string, diskSum string) {
	t.Helper()
	start := time.Now()
	if got := must(t, "blockdev", "--getro", dev); got != "1" {
		t.Errorf("blockdev --getro = %s, want 1", got)
	}
	if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(40<<20) {
		t.Errorf("blockdev --getsize64 = %s, want %d", got, 40<<20)
	}
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	must(t, "mount", "-o", "ro", dev+"p1", mnt)
	for name, want := range files {
		if got := sha(t, filepath.Join(mnt, name), 0); got != want {
			t.Errorf("%s on the mounted partition differs from the original", name)
		}
	}
	must(t, "umount", mnt)
	t.Logf("mounted and verified in %v", time.Since(start))
	start = time.Now()
	if got := sha(t, dev, 0); got != diskSum {
		t.Error("the device's contents differ from the uncompressed disk")
	}
	t.Logf("whole device read in %v", time.Since(start))
	found := false
	for _, d := range listDevices(t).Devices {
		if d.Name == dev {
			found = true
			if !d.RO || d.Source != source {
				t.Errorf("list: ro %v, source %q, want true, %q", d.RO, d.Source, source)
			}
		}
	}
	if !found {
		t.Errorf("list does not show %s", dev)
	}
	detach(t, dev)
	requireClean(t, "after detach")
}

// TestKernelHTTPCow: the same image with --filter cow is writable; the
// writes stay in the local overlay and the served object is unchanged.
func TestKernelHTTPCow(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	url, _, files, path := servedImage(t, dir)
	before := sha(t, path, 0)
	dev, stderr := attachStderr(t, "--filter", "cow", "-P", url)
	if strings.Contains(stderr, "read-only") {
		t.Errorf("attach --filter cow stderr = %q, want no read-only note", stderr)
	}
	if got := must(t, "blockdev", "--getro", dev); got != "0" {
		t.Errorf("blockdev --getro = %s, want 0", got)
	}
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	must(t, "mount", dev+"p1", mnt)
	sh(t, "echo written through cow > "+mnt+"/new.txt && rm "+mnt+"/zeros.bin && sync")
	if got := sha(t, filepath.Join(mnt, "random.bin"), 0); got != files["random.bin"] {
		t.Error("random.bin differs from the original")
	}
	must(t, "umount", mnt)
	must(t, "mount", "-o", "ro", dev+"p1", mnt)
	if got := sh(t, "cat "+mnt+"/new.txt"); got != "written through cow" {
		t.Errorf("new.txt = %q after remount", got)
	}
	if _, err := os.Stat(filepath.Join(mnt, "zeros.bin")); !os.IsNotExist(err) {
		t.Errorf("zeros.bin after its removal and a remount: %v, want it gone", err)
	}
	for _, name := range []string{"random.bin", "sub/numbers.txt", "hello.txt"} {
		if got := sha(t, filepath.Join(mnt, name), 0); got != files[name] {
			t.Errorf("%s differs from the original after writes through cow", name)
		}
	}
	must(t, "umount", mnt)
	detach(t, dev)
	if sha(t, path, 0) != before {
		t.Error("writing through --filter cow changed the served image")
	}
	requireClean(t, "after detach")
}

// TestKernelHTTPQcow2: a qcow2 image whose backing file is the qcow2
// image next to it on the web server, attached by URL with -P: the chain
// is read by URL, the partition mounted read-only and its files verified,
// and the device reads as qemu-img convert -O raw of the chain.
func TestKernelHTTPQcow2(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img, files := partitionedExt4(t, dir)
	ng := served(t, dir)
	base, top := filepath.Join(ng.Root, "base.qcow2"), filepath.Join(ng.Root, "top.qcow2")
	must(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", img, base)
	must(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	// The top layer holds data past the partition, where the chain differs
	// from the base.
	must(t, "qemu-io", "-c", "write -P 0x5a 39M 512k", top)
	want := filepath.Join(dir, "chain.raw")
	must(t, "qemu-img", "convert", "-O", "raw", top, want)
	chainSum := sha(t, want, 0)
	os.Remove(want)
	os.Remove(img)
	url := ng.URL + "/top.qcow2"
	dev, stderr := attachStderr(t, "-P", url)
	if !strings.Contains(stderr, "objects by URL are read-only: attached read-only") {
		t.Errorf("attach stderr = %q, want the read-only note", stderr)
	}
	if got := must(t, "blockdev", "--getro", dev); got != "1" {
		t.Errorf("blockdev --getro = %s, want 1", got)
	}
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	must(t, "mount", "-o", "ro", dev+"p1", mnt)
	for name, want := range files {
		if got := sha(t, filepath.Join(mnt, name), 0); got != want {
			t.Errorf("%s on the mounted partition differs from the original", name)
		}
	}
	must(t, "umount", mnt)
	if got := sha(t, dev, 0); got != chainSum {
		t.Error("the device's contents differ from qemu-img convert -O raw of the chain")
	}
	detach(t, dev)
	requireClean(t, "after detach")
}

// TestKernelHTTPDirect: large reads of a raw image by URL that the cache
// has none of come straight from nginx's answers, spliced through pipes
// into the device's socket and not kept: dd with iflag=direct in 1 MiB
// blocks reads the object's bytes, and the server's peak memory does not
// grow with them. The same device read in 64 KiB blocks goes through the
// cache, which keeps what it reads: the server's peak memory grows by the
// object (the contrast that shows the first read took no room).
func TestKernelHTTPDirect(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	ng := served(t, dir)
	const size = 96 << 20
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{7})
	rng.Read(data)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	url := ng.Put(t, "disk.img", data, time.Unix(1700000000, 0))
	dev := attachDev(t, "-r", "--cache-size", "512M", url)
	pid := serverPID(t, dev)
	base := peakRSS(t, pid)
	for _, tc := range []struct {
		bs          string
		grows, upto int64 // the bounds of the peak's growth
	}{
		{"1M", 0, 32 << 20},
		{"64K", size * 3 / 4, 1 << 40},
	} {
		got := sh(t, "dd if="+dev+" iflag=direct bs="+tc.bs+" status=none | sha256sum | cut -d' ' -f1")
		if got != want {
			t.Errorf("bs=%s: the device's contents differ from the object's", tc.bs)
		}
		grew := peakRSS(t, pid) - base
		t.Logf("bs=%s: the server's peak memory grew by %d MiB", tc.bs, grew>>20)
		if grew < tc.grows || grew > tc.upto {
			t.Errorf("bs=%s: the server's peak memory grew by %d MiB reading %d MiB, want %d to %d MiB", tc.bs, grew>>20, size>>20, tc.grows>>20, tc.upto>>20)
		}
	}
	detach(t, dev)
	requireClean(t, "after detach")
}

// peakRSS returns the peak resident memory of the process pid (VmHWM).
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kib << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
