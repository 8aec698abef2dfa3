//go:build kernel

package kerneltest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// partitionNodes lists the partitions the kernel has for dev
// (/sys/block/nbdN/nbdNpK), sorted by number, and checks that each has its
// /dev node.
func partitionNodes(t *testing.T, dev string) []int {
	t.Helper()
	name := filepath.Base(dev)
	ents, err := os.ReadDir("/sys/block/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var nums []int
	for _, e := range ents {
		if n, err := strconv.Atoi(strings.TrimPrefix(e.Name(), name+"p")); err == nil && strings.HasPrefix(e.Name(), name+"p") {
			nums = append(nums, n)
			if _, err := os.Stat("/dev/" + e.Name()); err != nil {
				t.Errorf("%s is in sysfs but /dev/%s is missing", e.Name(), e.Name())
			}
		}
	}
	sort.Ints(nums)
	return nums
}

// sysfsInt reads an integer attribute of a partition (start, size: in
// 512-byte sectors).
func sysfsInt(t *testing.T, dev string, part int, attr string) int64 {
	t.Helper()
	name := filepath.Base(dev)
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/%s/%sp%d/%s", name, name, part, attr))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// blkType returns what blkid -p finds on a device.
func blkType(t *testing.T, dev string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "blkid", "-p", "-o", "value", "-s", "TYPE", dev).stdout)
}

func fileBytes(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKernelCompositePaper is the paper's disk: an ext4 boot.img, a
// swap.img from mkswap and an xfs root.img with a file in it become one GPT
// disk with -P; the kernel sees p1..p3 with the right contents, p3 mounts,
// and what is written through the partitions lands in the files.
func TestKernelCompositePaper(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	boot, swap, root := filepath.Join(dir, "boot.img"), filepath.Join(dir, "swap.img"), filepath.Join(dir, "root.img")
	must(t, "truncate", "-s", "64M", boot)
	must(t, "mkfs.ext4", "-q", boot)
	must(t, "truncate", "-s", "32M", swap)
	must(t, "mkswap", "-q", swap)
	// mkfs.xfs fills root.img from a protofile, without mounting it; it
	// refuses file systems under 300 MB.
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from root.img\n"), 0o644)
	proto := fmt.Sprintf("/dev/null\n0 0\nd--755 0 0\nhello.txt ---644 0 0 %s/hello.txt\n$\n", dir)
	os.WriteFile(filepath.Join(dir, "proto"), []byte(proto), 0o644)
	must(t, "truncate", "-s", "300M", root)
	must(t, "mkfs.xfs", "-q", "-p", filepath.Join(dir, "proto"), root)

	start := time.Now()
	dev, stderr := attachStderr(t, "--partitions", "-P", boot, swap, root)
	t.Logf("attach --partitions -P of 64M+32M+300M: %v; stderr %q", time.Since(start).Round(time.Millisecond), stderr)
	if got := partitionNodes(t, dev); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("partitions of %s = %v, want [1 2 3]", dev, got)
	}
	for i, want := range []string{"ext4", "swap", "xfs"} {
		p := fmt.Sprintf("%sp%d", dev, i+1)
		if got := blkType(t, p); got != want {
			t.Errorf("blkid -p %s = %q, want %q", p, got, want)
		}
		name := strings.TrimSpace(run(t, "blkid", "-p", "-o", "value", "-s", "PART_ENTRY_NAME", p).stdout)
		if want := []string{"boot", "swap", "root"}[i]; name != want {
			t.Errorf("%s: partition name %q, want %q", p, name, want)
		}
	}
	if out := must(t, "sgdisk", "-v", dev); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", dev, out)
	}
	// Sizes: whole sectors of each file, on 1 MiB boundaries.
	for i, size := range []int64{64 << 20, 32 << 20, 300 << 20} {
		if got := sysfsInt(t, dev, i+1, "size") * 512; got != size {
			t.Errorf("p%d: %d bytes, want %d", i+1, got, size)
		}
	}
	l := listDevices(t)
	if len(l.Devices) != 1 || !strings.HasPrefix(l.Devices[0].Source, "gpt:"+boot+"+") {
		t.Errorf("list --json = %+v, want SOURCE gpt:%s+...", l.Devices, boot)
	}

	// The table cannot be changed, but the same bytes can be written back.
	hdr := filepath.Join(dir, "hdr")
	must(t, "dd", "if="+dev, "of="+hdr, "bs=512", "skip=1", "count=1", "iflag=direct", "status=none")
	must(t, "dd", "if="+hdr, "of="+dev, "bs=512", "seek=1", "count=1", "oflag=direct", "status=none")
	if r := run(t, "dd", "if=/dev/urandom", "of="+dev, "bs=512", "seek=1", "count=1", "oflag=direct", "status=none"); r.code == 0 {
		t.Errorf("overwriting the GPT header succeeded, want EIO")
	} else if !strings.Contains(r.stderr, "Input/output error") {
		t.Errorf("overwriting the GPT header: %s, want an I/O error", r.stderr)
	}

	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	must(t, "mount", dev+"p3", mnt)
	if b, err := os.ReadFile(mnt + "/hello.txt"); err != nil || string(b) != "hello from root.img\n" {
		t.Errorf("hello.txt on p3 = %q, %v", b, err)
	}
	sh(t, "head -c 2000000 /dev/urandom > "+mnt+"/written.bin && sync")
	sum := sha(t, mnt+"/written.bin", 0)
	must(t, "umount", mnt)
	// Raw bytes through the swap partition, at 1 MiB into it.
	pattern := bytes.Repeat([]byte("nbdloop-p2 "), 373)[:4096]
	os.WriteFile(filepath.Join(dir, "pattern"), pattern, 0o644)
	must(t, "dd", "if="+filepath.Join(dir, "pattern"), "of="+dev+"p2", "bs=4096", "seek=256", "oflag=direct", "status=none")
	detach(t, dev)

	if got := fileBytes(t, swap, 1<<20, 4096); !bytes.Equal(got, pattern) {
		t.Errorf("swap.img at 1 MiB does not hold what was written to p2 at 1 MiB")
	}
	if got := fileBytes(t, swap, 4096-10, 10); string(got) != "SWAPSPACE2" {
		t.Errorf("swap.img lost its signature: %q", got)
	}
	// root.img alone now holds the file written through p3.
	dev = attachDev(t, "-r", root)
	must(t, "mount", "-o", "ro,norecovery", dev, mnt)
	if got := sha(t, mnt+"/written.bin", 0); got != sum {
		t.Errorf("written.bin read from root.img differs from what was written through p3")
	}
	must(t, "umount", mnt)
	detach(t, dev)
	must(t, "e2fsck", "-fn", boot)
	requireClean(t, "after the paper's scenario")
}

// TestKernelCompositeMBR: six files with --table mbr give three primary
// partitions, the extended partition 4 and logical partitions 5-7.
func TestKernelCompositeMBR(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	var files []string
	for i := range 6 {
		f := filepath.Join(dir, fmt.Sprintf("part%d.img", i+1))
		must(t, "truncate", "-s", fmt.Sprintf("%dM", 2+i), f)
		files = append(files, f)
	}
	must(t, "mkswap", "-q", files[4])
	dev := attachDev(t, append([]string{"--partitions", "--table", "mbr", "-P"}, files...)...)
	got := partitionNodes(t, dev)
	t.Logf("MBR with 6 files: the kernel shows partitions %v of %s", got, dev)
	if fmt.Sprint(got) != "[1 2 3 4 5 6 7]" {
		t.Fatalf("partitions = %v, want 1-3, the extended 4 and 5-7", got)
	}
	// Linux gives an extended partition 1 KiB (2 sectors), enough for
	// tools to find the EBR chain.
	if size := sysfsInt(t, dev, 4, "size"); size != 2 {
		t.Errorf("p4 (extended): %d sectors, want 2", size)
	}
	for i, p := range []int{1, 2, 3, 5, 6, 7} {
		if size := sysfsInt(t, dev, p, "size") * 512; size != int64(2+i)<<20 {
			t.Errorf("p%d: %d bytes, want %d", p, size, int64(2+i)<<20)
		}
	}
	if got := blkType(t, dev+"p6"); got != "swap" {
		t.Errorf("blkid -p %sp6 = %q, want swap", dev, got)
	}
	st := run(t, "sfdisk", "-d", dev).stdout
	if !strings.Contains(st, "type=f") || !strings.Contains(st, "type=82") {
		t.Errorf("sfdisk -d %s:\n%s", dev, st)
	}
	// A write through logical partition 7 lands in part6.img.
	must(t, "dd", "if=/dev/urandom", "of="+dev+"p7", "bs=4096", "count=1", "seek=10", "oflag=direct", "status=none")
	want := make([]byte, 4096)
	f, _ := os.Open(dev + "p7")
	f.ReadAt(want, 10*4096)
	f.Close()
	detach(t, dev)
	if got := fileBytes(t, files[5], 10*4096, 4096); !bytes.Equal(got, want) {
		t.Errorf("part6.img does not hold what was written to p7")
	}
	requireClean(t, "after the MBR disk")
}

// TestKernelCompositeManyPartitions records how many partitions the kernel
// shows of a GPT disk built from 128, 200 and 300 files: nbd's max_part
// does not cap the count (partitions past the device's own minors get
// extended device numbers), the kernel's limit of 255 per disk does, and
// attach warns about the rest.
func TestKernelCompositeManyPartitions(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	maxPart := strings.TrimSpace(sh(t, "cat /sys/module/nbd/parameters/max_part"))
	var files []string
	for i := range 300 {
		f := filepath.Join(dir, fmt.Sprintf("p%03d.img", i+1))
		files = append(files, f)
	}
	must(t, "truncate", append([]string{"-s", "1M"}, files...)...)
	for _, tt := range []struct {
		n, want int
		warn    string
	}{
		{n: 128, want: 128},
		{n: 200, want: 200},
		{n: 300, want: 255, warn: "partitions: warning: Linux shows at most 255 partitions of a disk: partitions 256 to 300 will have no device node"},
	} {
		start := time.Now()
		dev, stderr := attachStderr(t, append([]string{"--partitions", "-P"}, files[:tt.n]...)...)
		took := time.Since(start)
		got := partitionNodes(t, dev)
		t.Logf("GPT with %d files (nbd max_part=%s): the kernel shows %d partitions, p%d..p%d; attach -P took %v",
			tt.n, maxPart, len(got), got[0], got[len(got)-1], took.Round(time.Millisecond))
		if len(got) != tt.want || got[0] != 1 || got[len(got)-1] != tt.want {
			t.Errorf("%d files: partitions %v, want 1..%d", tt.n, got, tt.want)
		}
		if (tt.warn == "") != (strings.TrimSpace(stderr) == "") || !strings.Contains(stderr, tt.warn) {
			t.Errorf("%d files: attach stderr %q, want %q", tt.n, stderr, tt.warn)
		}
		// The last visible partition is the right file.
		last := fmt.Sprintf("%sp%d", dev, tt.want)
		sh(t, fmt.Sprintf("printf 'file %d' | dd of=%s bs=512 count=1 conv=sync oflag=direct status=none", tt.want, last))
		detach(t, dev)
		if got := fileBytes(t, files[tt.want-1], 0, 8); string(got) != fmt.Sprintf("file %d", tt.want) {
			t.Errorf("p%d wrote to the wrong file: %q", tt.want, got)
		}
	}
	requireClean(t, "after the partition counts")
}

// TestKernelCompositeMaxPartZero: with nbd loaded as max_part=0 the
// driver does not make the kernel scan a new device for partitions, so
// without -P there are none, and attach says so and what to do; -P (an
// explicit BLKRRPART) still shows them. The driver is reloaded for this
// and restored afterwards.
func TestKernelCompositeMaxPartZero(t *testing.T) {
	requireDriver(t)
	requireClean(t, "before reloading nbd")
	params := map[string]string{}
	for _, p := range []string{"nbds_max", "max_part"} {
		params[p] = strings.TrimSpace(sh(t, "cat /sys/module/nbd/parameters/"+p))
	}
	reload := func(args ...string) {
		t.Helper()
		must(t, "rmmod", "nbd")
		if kdir := os.Getenv("NBDLOOP_KDIR"); kdir != "" {
			must(t, "modprobe", append([]string{"-d", kdir, "nbd"}, args...)...)
		} else {
			must(t, "modprobe", append([]string{"nbd"}, args...)...)
		}
		waitNode(t, "/dev/nbd0")
	}
	reload("nbds_max=4", "max_part=0")
	t.Cleanup(func() {
		run(t, nbdloop(t), "detach", "-a", "--force")
		// The driver reports max_part=31 for max_part=16; either loads the
		// same.
		reload("nbds_max="+params["nbds_max"], "max_part="+params["max_part"])
	})
	dir := scratch(t)
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	must(t, "truncate", "-s", "4M", a, b)

	dev, stderr := attachStderr(t, "--partitions", a, b)
	want := "partitions: warning: the nbd driver was loaded with max_part=0, so the kernel does not look for partitions on nbd devices by itself (attach with -P"
	if !strings.Contains(stderr, want) {
		t.Errorf("attach stderr = %q, want %q", stderr, want)
	}
	// The kernel runs a pending partition scan when the whole device is
	// opened (on a host udev's blkid opens it; the VM has no udev): once
	// this open returns, any partitions the kernel would find are in sysfs.
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := partitionNodes(t, dev)
	if len(got) != 0 {
		t.Errorf("max_part=0 without -P: partitions %v, want none", got)
	}
	t.Logf("max_part=0, attach without -P: %s has partitions %v; attach said: %s", dev, got, strings.TrimSpace(stderr))
	detach(t, dev)

	dev, stderr = attachStderr(t, "--partitions", "-P", a, b)
	got = partitionNodes(t, dev)
	if fmt.Sprint(got) != "[1 2]" || strings.TrimSpace(stderr) != "" {
		t.Errorf("max_part=0 with -P: partitions %v, stderr %q; want [1 2] and no warning", got, stderr)
	}
	major := strings.TrimSpace(sh(t, "cat /sys/block/"+filepath.Base(dev)+"/"+filepath.Base(dev)+"p1/dev"))
	t.Logf("max_part=0, attach -P: %s has partitions %v (p1 is %s: extended device numbers)", dev, got, major)
	detach(t, dev)
}

// TestKernelCompositeConcat: three files as one device, mkfs, mount, a
// file written across their boundaries; after detach the files hold the
// device's bytes, in order (the file system reads back from them without
// nbdloop), and a raw write across a boundary is split between two files.
func TestKernelCompositeConcat(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	a, b, c := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img"), filepath.Join(dir, "c.img")
	must(t, "truncate", "-s", "8M", a, c)
	must(t, "truncate", "-s", "4M", b)
	dev := attachDev(t, "--concat", a, b, c)
	if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(20<<20) {
		t.Errorf("size %s, want %d", got, 20<<20)
	}
	must(t, "mkfs.ext4", "-q", dev)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	must(t, "mount", dev, mnt)
	// 14 MiB do not fit in two of the files: the file crosses both
	// boundaries.
	sh(t, "head -c 14M /dev/urandom > "+mnt+"/big.bin && sync")
	sum := sha(t, mnt+"/big.bin", 0)
	must(t, "umount", mnt)
	devSum := sha(t, dev, 0)
	detach(t, dev)

	whole := filepath.Join(dir, "whole.img")
	sh(t, "cat "+a+" "+b+" "+c+" > "+whole)
	if got := sha(t, whole, 0); got != devSum {
		t.Errorf("a.img+b.img+c.img differ from the device's bytes")
	}
	must(t, "e2fsck", "-fn", whole)
	must(t, "debugfs", "-R", "dump /big.bin "+dir+"/big.out", whole)
	if got := sha(t, dir+"/big.out", 0); got != sum {
		t.Errorf("big.bin read from a.img+b.img+c.img differs from what was written")
	}
	os.Remove(whole)

	// 1 MiB across the a/b boundary: 512 KiB on each side.
	dev = attachDev(t, "--concat", a, b, c)
	pattern := bytes.Repeat([]byte("across "), 1<<20/7+1)[:1<<20]
	os.WriteFile(filepath.Join(dir, "pattern"), pattern, 0o644)
	must(t, "dd", "if="+filepath.Join(dir, "pattern"), "of="+dev, "bs=512K", "seek=15", "oflag=direct", "status=none")
	detach(t, dev)
	if got := fileBytes(t, a, 8<<20-512<<10, 512<<10); !bytes.Equal(got, pattern[:512<<10]) {
		t.Errorf("the end of a.img does not hold the first half of the write across the boundary")
	}
	if got := fileBytes(t, b, 0, 512<<10); !bytes.Equal(got, pattern[512<<10:]) {
		t.Errorf("the start of b.img does not hold the second half of the write across the boundary")
	}

	// Files whose total is not a multiple of 512: padded, with a warning.
	x, y := filepath.Join(dir, "x.img"), filepath.Join(dir, "y.img")
	must(t, "truncate", "-s", "1000", x)
	must(t, "truncate", "-s", "1M", y)
	dev, stderr := attachStderr(t, "--concat", x, y)
	if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(1<<20+1024) {
		t.Errorf("padded size %s, want %d", got, 1<<20+1024)
	}
	if want := "the device ends with 24 bytes of zeros that cannot store data"; !strings.Contains(stderr, want) {
		t.Errorf("attach stderr %q, want %q", stderr, want)
	}
	detach(t, dev)
	requireClean(t, "after concat")
}

// TestKernelCompositePartitionView: --partition N serves one partition of
// an image (GPT, and an MBR logical partition), and lists the partitions
// there are when N is not one of them.
func TestKernelCompositePartitionView(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img, files := partitionedExt4(t, dir)
	dev := attachDev(t, "-r", "--partition", "1", img)
	if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(38<<20) {
		t.Errorf("partition 1: %s bytes, want %d", got, 38<<20)
	}
	if got := partitionNodes(t, dev); len(got) != 0 {
		t.Errorf("a partition view has partitions %v", got)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	must(t, "mount", "-o", "ro", dev, mnt)
	for name, sum := range files {
		if got := sha(t, filepath.Join(mnt, name), 0); got != sum {
			t.Errorf("%s differs", name)
		}
	}
	must(t, "umount", mnt)
	detach(t, dev)

	// A logical partition of an MBR disk, writable.
	mbr := filepath.Join(dir, "mbr.img")
	must(t, "truncate", "-s", "32M", mbr)
	sh(t, "printf 'label: dos\\n,4M\\n,+,5\\n,4M\\n,8M,83\\n' | sfdisk -q "+mbr)
	dev = attachDev(t, "--partition", "6", mbr)
	must(t, "mkfs.ext4", "-q", dev)
	detach(t, dev)
	parts := run(t, "sfdisk", "-d", mbr).stdout
	var start int64
	for _, line := range strings.Split(parts, "\n") {
		if strings.HasPrefix(line, mbr+"6 ") {
			fmt.Sscanf(strings.Fields(line)[3], "%d,", &start)
		}
	}
	if start == 0 {
		t.Fatalf("no partition 6 in:\n%s", parts)
	}
	if got := strings.TrimSpace(run(t, "blkid", "-p", "-o", "value", "-s", "TYPE", "-O", strconv.FormatInt(start*512, 10), mbr).stdout); got != "ext4" {
		t.Errorf("mkfs.ext4 through --partition 6 left %q at sector %d of mbr.img, want ext4", got, start)
	}

	r := run(t, nbdloop(t), "attach", "--partition", "3", mbr)
	if want := "nbdloop: " + mbr + ": no partition 3: its MBR has 1, 2, 5, 6 (--partition 1)\n"; r.code != 1 || r.stderr != want {
		t.Errorf("attach --partition 3: exit %d, stderr %q; want 1, %q", r.code, r.stderr, want)
	}
	requireClean(t, "after partition views")
}

// TestKernelCompositeReadOnlyFile: a file that cannot be opened for
// writing (immutable, so that even root cannot) makes its partition
// read-only, while the others stay writable; in a concatenation, the same
// mix is refused.
func TestKernelCompositeReadOnlyFile(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	must(t, "truncate", "-s", "4M", a, b)
	must(t, "chattr", "+i", b)
	t.Cleanup(func() { run(t, "chattr", "-i", b) })
	dev, stderr := attachStderr(t, "--partitions", "-P", a, b)
	want := b + " cannot be opened for writing: permission denied: partition 2 is read-only (writes to it fail with EPERM; mount it with -o ro)"
	if !strings.Contains(stderr, want) {
		t.Errorf("attach stderr %q, want %q", stderr, want)
	}
	if r := run(t, "dd", "if=/dev/zero", "of="+dev+"p1", "bs=4096", "count=1", "oflag=direct", "status=none"); r.code != 0 {
		t.Errorf("write to p1: %s", r.stderr)
	}
	if r := run(t, "dd", "if=/dev/urandom", "of="+dev+"p2", "bs=4096", "count=1", "oflag=direct", "status=none"); r.code == 0 {
		t.Errorf("write to the read-only p2 succeeded")
	}
	detach(t, dev)

	r := run(t, nbdloop(t), "attach", "--concat", a, b)
	wantErr := "nbdloop: concat: " + b + " cannot be opened for writing: permission denied, but " + a +
		" is writable: a file system across them would fail on some of its writes (attach with -r, or make every file writable)\n"
	if r.code != 1 || r.stderr != wantErr {
		t.Errorf("attach --concat of a writable and an immutable file: exit %d, stderr %q; want 1, %q", r.code, r.stderr, wantErr)
	}
	dev = attachDev(t, "-r", "--concat", a, b)
	detach(t, dev)
	requireClean(t, "after read-only files")
}

// TestKernelCompositeErrors: the errors of composite devices are one line,
// exit status 1, and leave nothing behind.
func TestKernelCompositeErrors(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	a, empty, big1, big2 := filepath.Join(dir, "a.img"), filepath.Join(dir, "empty.img"), filepath.Join(dir, "big1.img"), filepath.Join(dir, "big2.img")
	must(t, "truncate", "-s", "1M", a)
	must(t, "truncate", "-s", "0", empty)
	must(t, "truncate", "-s", "1536G", big1, big2)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--partitions", a, dir + "/missing.img"}, dir + "/missing.img: no such file or directory (check the path)"},
		{[]string{"--partitions", a, empty}, empty + ": empty file: a partitions part needs at least one byte"},
		{[]string{"--concat", a, a}, a + " and " + a + " are the same file"},
		{[]string{"--partitions", "--table", "mbr", a, big1, big2}, "partitions: the files add up to 3T, too large for an MBR, which addresses at most 2T with 512-byte sectors (use --table gpt)"},
		{[]string{"--partition", "2", a}, a + ": no partition table (MBR or GPT) to find partition 2 in"},
	} {
		r := run(t, nbdloop(t), append([]string{"attach"}, tt.args...)...)
		if r.code != 1 || !strings.HasPrefix(r.stderr, "nbdloop: "+tt.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("attach %s: exit %d, stderr %q; want 1 and one line starting %q", strings.Join(tt.args, " "), r.code, r.stderr, "nbdloop: "+tt.want)
		}
		requireClean(t, "after attach "+strings.Join(tt.args, " "))
	}
}
