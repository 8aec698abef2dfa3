//go:build kernel

package kerneltest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// partitionedExt4 makes a GPT disk image of 40 MiB with one ext4 partition
// (1 MiB .. 39 MiB) holding a few files, without loop devices: mkfs.ext4 -d
// fills a partition-sized file, which dd puts into place. It returns the
// image and the files' sha256 by name.
func partitionedExt4(t *testing.T, dir string) (string, map[string]string) {
	t.Helper()
	src := filepath.Join(dir, "files")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	sh(t, "head -c 1000000 /dev/urandom > "+src+"/random.bin"+
		" && seq 1 100000 > "+src+"/sub/numbers.txt"+
		" && head -c 2M /dev/zero > "+src+"/zeros.bin"+
		" && echo hello compressed nbdloop > "+src+"/hello.txt")
	files := map[string]string{}
	for _, name := range []string{"random.bin", "sub/numbers.txt", "zeros.bin", "hello.txt"} {
		files[name] = sha(t, filepath.Join(src, name), 0)
	}
	part := filepath.Join(dir, "part.img")
	img := filepath.Join(dir, "disk.img")
	must(t, "truncate", "-s", "38M", part)
	must(t, "mkfs.ext4", "-q", "-d", src, part)
	must(t, "truncate", "-s", "40M", img)
	must(t, "sgdisk", "-n", "1:2048:+38M", "-t", "1:8300", img)
	must(t, "dd", "if="+part, "of="+img, "bs=1M", "seek=1", "conv=notrunc", "status=none")
	os.Remove(part)
	return img, files
}

// attachStderr is attachDev that also returns what attach printed on
// stderr (warnings and notes).
func attachStderr(t *testing.T, args ...string) (string, string) {
	t.Helper()
	r := run(t, nbdloop(t), append([]string{"attach"}, args...)...)
	if r.code != 0 {
		t.Fatalf("nbdloop attach %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	dev := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(dev, "/dev/nbd") || strings.Contains(dev, "\n") {
		t.Fatalf("nbdloop attach printed %q, want one /dev/nbdN line", r.stdout)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(pidFile(dev)); err == nil {
			run(t, nbdloop(t), "detach", "--force", dev)
		}
	})
	return dev, r.stderr
}

// TestKernelCompressed is the paper's first example: a partitioned disk
// image, compressed, attached with -P (read-only implied), its ext4
// partition mounted read-only and the files verified.
func TestKernelCompressed(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	start := time.Now()
	img, files := partitionedExt4(t, dir)
	t.Logf("image made in %v", time.Since(start))
	imgSum := sha(t, img, 0)
	cache := filepath.Join(dir, "cache")
	t.Setenv("XDG_CACHE_HOME", cache) // where attach keeps gzip indexes
	tests := []struct {
		name     string
		compress string // shell command: reads $IMG, writes $OUT; $NBDLOOP is nbdloop
		format   string
		warn     string // in attach's stderr besides the read-only note
		whole    bool   // also compare the whole device with the image
	}{
		{name: "xz multi-block", compress: `xz -0 -T2 --block-size=1MiB -c "$IMG" > "$OUT"`, format: "xz", whole: true},
		{name: "xz single block", compress: `xz -0 -T1 -c "$IMG" > "$OUT"`, format: "xz", warn: "single 40 MiB block"},
		{name: "gzip", compress: `gzip -1 -c "$IMG" > "$OUT"`, format: "gzip", whole: true},
		{name: "zstd seekable from nbdloop pack", compress: `"$NBDLOOP" pack --level 1 "$IMG" -o "$OUT"`, format: "zstd"},
		{name: "zstd single frame", compress: `zstd -q -1 -c "$IMG" > "$OUT"`, format: "zstd", warn: "single 40 MiB frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, "disk.img."+tt.format)
			start := time.Now()
			sh(t, "IMG="+img+" OUT="+out+" NBDLOOP="+nbdloop(t)+" && "+tt.compress)
			t.Logf("compressed in %v", time.Since(start))
			start = time.Now()
			defer os.Remove(out)
			dev, stderr := attachStderr(t, "-P", out)
			if !strings.Contains(stderr, tt.format+" images are read-only: attached read-only") {
				t.Errorf("attach stderr = %q, want the read-only note", stderr)
			}
			if !strings.Contains(stderr, tt.warn) {
				t.Errorf("attach stderr = %q, want %q", stderr, tt.warn)
			}
			if got := must(t, "blockdev", "--getro", dev); got != "1" {
				t.Errorf("blockdev --getro = %s, want 1", got)
			}
			if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(40<<20) {
				t.Errorf("blockdev --getsize64 = %s, want %d", got, 40<<20)
			}
			if r := run(t, "dd", "if=/dev/zero", "of="+dev, "bs=4096", "count=1", "oflag=direct"); r.code == 0 {
				t.Error("dd to a compressed image's device succeeded")
			}
			t.Logf("attached in %v", time.Since(start))
			start = time.Now()
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
			if tt.whole {
				if got := sha(t, dev, 0); got != imgSum {
					t.Error("the device's contents differ from the uncompressed image")
				}
			}
			t.Logf("whole device read in %v", time.Since(start))
			found := false
			for _, d := range listDevices(t).Devices {
				if d.Name == dev {
					found = true
					if !d.RO || d.Source != out {
						t.Errorf("list: ro %v, source %q, want true, %q", d.RO, d.Source, out)
					}
				}
			}
			if !found {
				t.Errorf("list does not show %s", dev)
			}
			detach(t, dev)
			requireClean(t, "after detach")
			if tt.format == "gzip" {
				if m, _ := filepath.Glob(cache + "/nbdloop/gzip-index/*.idx"); len(m) != 1 {
					t.Errorf("gzip indexes kept in %s: %v, want one", cache, m)
				}
			}
		})
	}
}

// TestKernelCompressedCow: --filter cow makes a compressed image's device
// writable; the writes go to the overlay and the image stays as it was.
func TestKernelCompressedCow(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img, files := partitionedExt4(t, dir)
	out := img + ".xz"
	must(t, "xz", "-0", "-T2", "--block-size=1MiB", "-k", img)
	before := sha(t, out, 0)
	dev, stderr := attachStderr(t, "--filter", "cow", "-P", out)
	if strings.Contains(stderr, "read-only") {
		t.Errorf("attach --filter cow stderr = %q, want no read-only note", stderr)
	}
	if got := must(t, "blockdev", "--getro", dev); got != "0" {
		t.Errorf("blockdev --getro = %s, want 0", got)
	}
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	must(t, "mount", dev+"p1", mnt)
	sh(t, "echo written through cow > "+mnt+"/new.txt && sync")
	if got := sha(t, filepath.Join(mnt, "random.bin"), 0); got != files["random.bin"] {
		t.Error("random.bin differs from the original")
	}
	must(t, "umount", mnt)
	must(t, "mount", "-o", "ro", dev+"p1", mnt)
	if got := sh(t, "cat "+mnt+"/new.txt"); got != "written through cow" {
		t.Errorf("new.txt = %q after remount", got)
	}
	must(t, "umount", mnt)
	detach(t, dev)
	if sha(t, out, 0) != before {
		t.Error("writing through --filter cow changed the compressed image")
	}
	requireClean(t, "after detach")
}
