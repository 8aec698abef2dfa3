//go:build kernel

package kerneltest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKernelQcow2BackingWrite: a qcow2 overlay whose backing file (itself
// qcow2, over a raw GPT disk with an ext4 partition) is attached with -P;
// the partition is mounted, a file written and the device detached. Then
// qemu-img check finds the overlay clean, the backing files are unchanged,
// and the file is in the image: read back through qemu-img convert and
// debugfs, and by attaching the overlay again read-only.
func TestKernelQcow2BackingWrite(t *testing.T) {
	requireDriver(t)
	requireClean(t, "before")
	dir := scratch(t)
	raw, files := partitionedExt4(t, dir)
	base := filepath.Join(dir, "base.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	must(t, "qemu-img", "convert", "-O", "qcow2", raw, base)
	// Relative backing name, resolved against the overlay's directory.
	must(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", "-b", "base.qcow2", "-F", "qcow2", top)
	baseSum, rawSum := sha(t, base, 0), sha(t, raw, 0)

	dev := attachDev(t, "-P", top)
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	must(t, "mount", dev+"p1", mnt)
	for name, sum := range files {
		if got := sha(t, filepath.Join(mnt, name), 0); got != sum {
			t.Errorf("%s on the mounted partition differs from the backing file's", name)
		}
	}
	sh(t, "head -c 3000000 /dev/urandom > "+mnt+"/new.bin && echo written through qcow2 > "+mnt+"/hello-qcow2.txt && sync")
	newSum := sha(t, filepath.Join(mnt, "new.bin"), 0)
	must(t, "umount", mnt)
	detach(t, dev)
	requireClean(t, "after detach")

	if r := run(t, "qemu-img", "check", top); r.code != 0 || !strings.Contains(r.stdout, "No errors were found") {
		t.Errorf("qemu-img check %s: exit %d\n%s%s", top, r.code, r.stdout, r.stderr)
	}
	if sha(t, base, 0) != baseSum || sha(t, raw, 0) != rawSum {
		t.Errorf("the backing files changed")
	}

	// The file, as qemu sees the image: convert to raw, cut the partition
	// out, read it with debugfs.
	flat := filepath.Join(dir, "flat.raw")
	part := filepath.Join(dir, "p1.raw")
	must(t, "qemu-img", "convert", "-O", "raw", top, flat)
	must(t, "dd", "if="+flat, "of="+part, "bs=1M", "skip=1", "count=38", "status=none")
	if got := must(t, "debugfs", "-R", "cat /hello-qcow2.txt", part); got != "written through qcow2" {
		t.Errorf("debugfs cat /hello-qcow2.txt = %q, want %q", got, "written through qcow2")
	}
	os.Remove(flat)
	os.Remove(part)

	// And through nbdloop again, read-only.
	dev = attachDev(t, "-r", "-P", top)
	must(t, "mount", "-o", "ro", dev+"p1", mnt)
	if got := sha(t, filepath.Join(mnt, "new.bin"), 0); got != newSum {
		t.Errorf("new.bin after re-attach differs from what was written")
	}
	must(t, "umount", mnt)
	detach(t, dev)
	requireClean(t, "after the read-only attach")
}
