//go:build kernel

package kerneltest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// directSum is the sha256 of the device read with O_DIRECT: from the
// server, not from the page cache.
func directSum(t *testing.T, dev string) string {
	t.Helper()
	return strings.Fields(sh(t, "dd if="+dev+" bs=1M iflag=direct status=none | sha256sum"))[0]
}

// TestKernelHTTPCacheDir: a raw image on nginx attached with --cache-dir
// and read whole, detached; one block of the cache file corrupted, the
// image attached again and read: the block is found bad (logged) and
// fetched again; then nginx stopped and the image attached a third time:
// every block is read from the cache directory, and again after the
// server is restarted (nbdloop restart) with nginx still down.
func TestKernelHTTPCacheDir(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	ng := served(t, dir)
	img := filepath.Join(ng.Root, "disk.img")
	sh(t, "head -c 8M /dev/urandom > "+img)
	want := sha(t, img, 0)
	url := ng.URL + "/disk.img"
	cache := filepath.Join(dir, "cache")
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}

	dev, _ := attachStderr(t, "-r", "--cache-dir", cache, url)
	if got := directSum(t, dev); got != want {
		t.Error("first attach: the device differs from the image")
	}
	detach(t, dev)
	files, _ := filepath.Glob(filepath.Join(cache, "*.blocks"))
	if len(files) != 1 {
		t.Fatalf("cache directory holds %v, want one .blocks file", files)
	}
	fi, err := os.Stat(files[0])
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v, mode %v, want 0600", err, fi.Mode())
	}
	// Corrupt the last slot's bytes (some block of the image).
	sh(t, "printf garbage | dd of="+files[0]+" bs=1 seek=$(( $(stat -c %s "+files[0]+") - 4096 )) conv=notrunc status=none")

	dev, _ = attachStderr(t, "-r", "--cache-dir", cache, url)
	if got := directSum(t, dev); got != want {
		t.Error("after corrupting the cache: the device differs from the image")
	}
	waitForFile(t, filepath.Join(stateDir(), strings.TrimPrefix(dev, "/dev/")+".log"), "failed its check")
	detach(t, dev)

	ng.Stop()
	dev, stderr := attachStderr(t, "-r", "--timeout", "8", "--cache-dir", cache, url)
	if !strings.Contains(stderr, "did not answer") {
		t.Errorf("attach with nginx stopped: stderr %q does not say the server did not answer", stderr)
	}
	if got := directSum(t, dev); got != want {
		t.Error("nginx stopped: the device read from the cache differs from the image")
	}
	must(t, nbdloop(t), "restart", dev)
	if got := directSum(t, dev); got != want {
		t.Error("nginx stopped, server restarted: the device differs from the image")
	}
	detach(t, dev)
	requireClean(t, "after detach")
}
