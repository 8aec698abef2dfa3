//go:build kernel

package kerneltest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// helperNamespace returns a shell prelude that makes mount(8) find the
// binary under test as its nbdloop helper, for a script run with
// `unshare -m --propagation private`: mount looks for helpers in /sbin
// only, which is read-only in the VM (the host's root) and must not be
// touched natively, so the script's private mount namespace binds over
// /usr/sbin (/sbin links to it) a directory of links to every original
// entry, reached through a bind of the original, plus mount.nbdloop.
func helperNamespace(t *testing.T, dir string) string {
	t.Helper()
	sbin, orig := filepath.Join(dir, "sbin"), filepath.Join(dir, "orig-sbin")
	for _, d := range []string{sbin, orig} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir("/usr/sbin")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Symlink(filepath.Join(orig, e.Name()), filepath.Join(sbin, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(sbin, "mount.nbdloop"))
	if err := os.Symlink(nbdloop(t), filepath.Join(sbin, "mount.nbdloop")); err != nil {
		t.Fatal(err)
	}
	return "mount --bind /usr/sbin " + orig + " && mount --bind " + sbin + " /usr/sbin && "
}

// inNamespace runs script (sh -e) after prelude in a private mount
// namespace and returns its output; it fails the test if the script fails.
func inNamespace(t *testing.T, prelude, script string) string {
	t.Helper()
	return must(t, "unshare", "-m", "--propagation", "private", "/bin/sh", "-ec", prelude+script)
}

// xzDisk makes the paper's first example at test time: a GPT disk with an
// ext4 partition, compressed with xz in 1 MiB blocks.
func xzDisk(t *testing.T, dir string) (string, map[string]string) {
	t.Helper()
	img, files := partitionedExt4(t, dir)
	must(t, "xz", "-0", "-T2", "--block-size=1MiB", img)
	return img + ".xz", files
}

// checkFiles compares the sha256 lines of `sha256sum` run in dir with
// files.
func checkFiles(t *testing.T, out, dir string, files map[string]string) {
	t.Helper()
	for name, want := range files {
		if !strings.Contains(out, want+"  "+filepath.Join(dir, name)) {
			t.Errorf("%s: not read back intact (sha256sum printed %q)", name, out)
		}
	}
}

// requireNoRecords checks that no state record is left in /run/nbdloop.
func requireNoRecords(t *testing.T) {
	t.Helper()
	m, _ := filepath.Glob("/run/nbdloop/nbd*.json")
	if len(m) > 0 {
		t.Errorf("state records left behind: %v", m)
	}
}

// TestKernelMountHelper: `mount -t nbdloop -o ro,partition=1` of an xz
// disk image attaches it (with --autoclear) and mounts its first
// partition; the files read back intact after the page cache is dropped,
// a second past the arming of autoclear (so the partition's opener holds
// the whole device: otherwise arming would have detached it); umount then
// leaves no device, no server and no state record. A mount that fails
// (wrong fstype) detaches at once.
func TestKernelMountHelper(t *testing.T) {
	requireDriver(t)
	requireClean(t, "before")
	dir := scratch(t)
	xzImg, files := xzDisk(t, dir)
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	prelude := helperNamespace(t, dir)
	var sums []string
	for name := range files {
		sums = append(sums, filepath.Join(mnt, name))
	}
	out := inNamespace(t, prelude,
		"mount -t nbdloop -o ro,partition=1 "+xzImg+" "+mnt+
			" && findmnt -n -o SOURCE,OPTIONS "+mnt+
			" && "+nbdloop(t)+" list --json"+
			" && sleep 1 && echo 3 > /proc/sys/vm/drop_caches"+
			" && sha256sum "+strings.Join(sums, " ")+
			" && umount "+mnt)
	if !strings.Contains(out, "/dev/nbd") || !strings.Contains(out, "p1 ro") {
		t.Errorf("findmnt: %q, want /dev/nbdNp1 mounted ro", out)
	}
	if !strings.Contains(out, `"autoclear": true`) {
		t.Errorf("list --json does not show autoclear: %s", out)
	}
	checkFiles(t, out, mnt, files)
	requireClean(t, "after umount")
	requireNoRecords(t)

	r := run(t, "unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
		prelude+"mount -t nbdloop -o fstype=xfs,partition=1 "+xzImg+" "+mnt)
	if r.code == 0 || !strings.Contains(r.stderr, "mount.nbdloop: mounting /dev/nbd") || !strings.Contains(r.stderr, "failed; /dev/nbd") {
		t.Errorf("mount with the wrong fstype: exit %d, stderr %q; want a failure that says the device was detached", r.code, r.stderr)
	}
	requireClean(t, "after a failed mount")
	requireNoRecords(t)
}

// TestKernelFstab: lines of type nbdloop in an fstab (a temporary one,
// given to mount -a -T) are mounted: the xz disk read-only, a raw disk
// read-write with noatime passed on to mount; a file written to the raw
// disk is in its image after umount, and nothing is left attached.
func TestKernelFstab(t *testing.T) {
	requireDriver(t)
	requireClean(t, "before")
	dir := scratch(t)
	xzImg, files := xzDisk(t, dir)
	rawDir := filepath.Join(dir, "raw")
	os.MkdirAll(rawDir, 0o755)
	rawImg, _ := partitionedExt4(t, rawDir)
	m1, m2 := filepath.Join(dir, "m1"), filepath.Join(dir, "m2")
	os.MkdirAll(m1, 0o755)
	os.MkdirAll(m2, 0o755)
	fstab := filepath.Join(dir, "fstab")
	os.WriteFile(fstab, []byte("# test fstab\n"+
		xzImg+" "+m1+" nbdloop ro,partition=1 0 0\n"+
		rawImg+" "+m2+" nbdloop partition=1,noatime 0 0\n"), 0o644)
	prelude := helperNamespace(t, dir)
	out := inNamespace(t, prelude,
		"mount -a -T "+fstab+
			" && findmnt -n -o OPTIONS "+m1+" && findmnt -n -o OPTIONS "+m2+
			" && sha256sum "+filepath.Join(m1, "hello.txt")+
			" && echo written through fstab > "+m2+"/new.txt && sync"+
			" && umount "+m1+" && umount "+m2)
	lines := strings.Split(out, "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "ro,") || !strings.HasPrefix(lines[1], "rw,noatime") {
		t.Errorf("mount options %q, want ro,... and rw,noatime,...", lines)
	}
	checkFiles(t, out, m1, map[string]string{"hello.txt": files["hello.txt"]})
	requireClean(t, "after umount")
	requireNoRecords(t)
	part := filepath.Join(rawDir, "part1.img")
	must(t, "dd", "if="+rawImg, "of="+part, "bs=1M", "skip=1", "count=38", "status=none")
	if got := must(t, "debugfs", "-R", "cat /new.txt", part); got != "written through fstab" {
		t.Errorf("new.txt in the image's partition: %q", got)
	}
}

// TestKernelNbdTab: nbdtab attach attaches each line of a table once
// (a device given, a comment, quoting), a second run attaches nothing
// new, a line whose device was detached is attached again, a bad line
// fails alone (exit 1, FILE:LINE), and nbdtab detach detaches every
// device the table attached, leaving nothing.
func TestKernelNbdTab(t *testing.T) {
	requireDriver(t)
	requireClean(t, "before")
	dir := scratch(t)
	img, _ := partitionedExt4(t, dir)
	other := filepath.Join(dir, "other disk.img")
	must(t, "truncate", "-s", "16M", other)
	tab := filepath.Join(dir, "nbdtab")
	os.WriteFile(tab, []byte("# devices\n/dev/nbd5 --partscan "+img+"\n\n--read-only '"+other+"'  # the other one\n"), 0o644)
	out := must(t, nbdloop(t), "nbdtab", "attach", tab)
	if !strings.Contains(out, "/dev/nbd5\t/dev/nbd5 --partscan "+img+"\n") || !strings.Contains(out, `--read-only "`+other+`"`) {
		t.Errorf("nbdtab attach printed %q", out)
	}
	if _, err := os.Stat("/dev/nbd5p1"); err != nil {
		t.Errorf("--partscan: %v", err)
	}
	devs := attachedDevices(t)
	if len(devs) != 2 {
		t.Fatalf("attached %v, want 2 devices", devs)
	}
	for _, d := range listDevices(t).Devices {
		if strings.HasSuffix(d.Source, "other disk.img") && !d.RO {
			t.Errorf("%s: not read-only", d.Name)
		}
	}
	if out := must(t, nbdloop(t), "nbdtab", "attach", tab); strings.Count(out, "(attached already)") != 2 || len(attachedDevices(t)) != 2 {
		t.Errorf("second nbdtab attach: %q, devices %v; want both attached already", out, attachedDevices(t))
	}
	detach(t, "/dev/nbd5")
	if out := must(t, nbdloop(t), "nbdtab", "attach", tab); !strings.Contains(out, "/dev/nbd5\t/dev/nbd5 --partscan") || strings.Count(out, "(attached already)") != 1 {
		t.Errorf("nbdtab attach after a detach: %q", out)
	}
	os.WriteFile(tab, []byte("/dev/nbd5 --partscan "+img+"\n--read-only '"+other+"'\n--block-size 1000 "+img+"\n"), 0o644)
	r := run(t, nbdloop(t), "nbdtab", "attach", tab)
	if r.code != 1 || !strings.Contains(r.stderr, tab+":3: attach: --block-size 1000") || len(attachedDevices(t)) != 2 {
		t.Errorf("bad line: exit %d, stderr %q, devices %v", r.code, r.stderr, attachedDevices(t))
	}
	out = must(t, nbdloop(t), "nbdtab", "detach", tab)
	if strings.Count(out, "(detached)") != 2 {
		t.Errorf("nbdtab detach printed %q", out)
	}
	requireClean(t, "after nbdtab detach")
	requireNoRecords(t)
}

// TestKernelResize: after truncate -s, nbdloop resize gives a mounted
// device its file's new size without unmounting: the file system grows
// online (resize2fs) and a file written before reads back; bytes written
// to the grown part of the file are read through the device. A device
// whose size did not change keeps its server; an xz device is refused.
func TestKernelResize(t *testing.T) {
	requireDriver(t)
	requireClean(t, "before")
	dir := scratch(t)
	img := filepath.Join(dir, "grow.img")
	must(t, "truncate", "-s", "64M", img)
	must(t, "mkfs.ext4", "-q", img)
	dev := attachDev(t, img)
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	must(t, "mount", dev, mnt)
	defer run(t, "umount", mnt)
	sh(t, "head -c 3M /dev/urandom > "+mnt+"/before.bin && sync")
	before := sha(t, filepath.Join(mnt, "before.bin"), 0)
	pid := listDevices(t).Devices[0].PID
	if out := must(t, nbdloop(t), "resize", dev); !strings.Contains(out, dev+": 64M") || listDevices(t).Devices[0].PID != pid {
		t.Errorf("resize without a change: %q; server %d, was %d", out, listDevices(t).Devices[0].PID, pid)
	}
	must(t, "truncate", "-s", "128M", img)
	sh(t, "printf 'tail of the grown file' | dd of="+img+" bs=1 seek=$((128*1024*1024-4096)) conv=notrunc status=none")
	start := time.Now()
	var d struct {
		Size int64 `json:"size"`
	}
	if err := json.Unmarshal([]byte(must(t, nbdloop(t), "resize", "--json", dev)), &d); err != nil || d.Size != 128<<20 {
		t.Errorf("resize --json: size %d, %v", d.Size, err)
	}
	t.Logf("resized in %v", time.Since(start))
	if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(128<<20) {
		t.Errorf("blockdev --getsize64 = %s, want %d", got, 128<<20)
	}
	if got := sh(t, "dd if="+dev+" bs=4096 skip=$((128*256-1)) count=1 iflag=direct status=none | head -c 22"); got != "tail of the grown file" {
		t.Errorf("the grown part reads %q", got)
	}
	must(t, "resize2fs", dev)
	if got := sha(t, filepath.Join(mnt, "before.bin"), 0); got != before {
		t.Error("before.bin differs after the resize")
	}
	sh(t, "head -c 80M /dev/zero > "+mnt+"/big.bin && sync")
	must(t, "umount", mnt)
	detach(t, dev)

	xzImg, _ := xzDisk(t, dir)
	xdev := attachDev(t, xzImg)
	r := run(t, nbdloop(t), "resize", xdev)
	if r.code != 1 || !strings.Contains(r.stderr, "cannot resize: xz has a fixed size") {
		t.Errorf("resize of an xz device: exit %d, stderr %q", r.code, r.stderr)
	}
	detach(t, xdev)
	requireClean(t, "after")
}

// TestKernelAutoclear: attach --autoclear leaves a new device attached
// through the opens and closes of probes (blkid, a read), and detaches it
// when the file system mounted on its partition is unmounted, once the
// server has seen the mount; no server or state record is left.
func TestKernelAutoclear(t *testing.T) {
	requireDriver(t)
	requireClean(t, "before")
	dir := scratch(t)
	img, files := partitionedExt4(t, dir)
	dev := attachDev(t, "--autoclear", "-P", img)
	must(t, "blkid", dev+"p1")
	must(t, "dd", "if="+dev, "of=/dev/null", "bs=64K", "count=4", "status=none")
	time.Sleep(time.Second)
	if _, err := os.Stat(pidFile(dev)); err != nil {
		t.Fatalf("%s: detached by probes before being mounted: %v", dev, err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	must(t, "mount", "-o", "ro", dev+"p1", mnt)
	time.Sleep(time.Second)
	if got := sha(t, filepath.Join(mnt, "hello.txt"), 0); got != files["hello.txt"] {
		t.Error("hello.txt differs")
	}
	must(t, "umount", mnt)
	requireClean(t, "after umount")
	requireNoRecords(t)
}
