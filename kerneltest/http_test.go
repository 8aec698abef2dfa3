//go:build kernel

package kerneltest

import (
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
