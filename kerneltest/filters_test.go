//go:build kernel

package kerneltest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// TestKernelFilterRAID5 is the paper's RAID 5: six RAM disks, each behind
// an error filter with its own trigger file, in an md RAID 5 of five disks
// and a spare. Creating the first trigger fails a disk (md marks it (F))
// and the spare is rebuilt into its place; creating the second leaves the
// array degraded; the file written at the start keeps its checksum
// throughout, read from the disks, not from the cache.
func TestKernelFilterRAID5(t *testing.T) {
	requireDriver(t)
	if _, err := os.Stat("/sys/module/raid456"); err != nil {
		t.Fatal("raid456 is not loaded (scripts/kernel-tests.sh loads it: modprobe raid456)")
	}
	dir := scratch(t)
	var devs, triggers []string
	for i := range 6 {
		trig := filepath.Join(dir, fmt.Sprintf("error%d", i))
		triggers = append(triggers, trig)
		// One connection each: six servers share the machine's CPUs.
		devs = append(devs, attachDev(t, "-c", "1", "--filter", "error:file="+trig, "memory:128M"))
	}
	// Resync at full speed: the default minimum is 1 MB/s.
	const speedMin = "/proc/sys/dev/raid/speed_limit_min"
	if old, err := os.ReadFile(speedMin); err == nil {
		t.Cleanup(func() { os.WriteFile(speedMin, old, 0o644) })
	}
	os.WriteFile(speedMin, []byte("500000\n"), 0o644)
	const md = "/dev/md0"
	start := time.Now()
	must(t, "mdadm", append([]string{"--create", md, "--level=5", "--raid-devices=5", "--spare-devices=1", "--run", "--quiet"}, devs...)...)
	t.Cleanup(func() {
		for _, trig := range triggers {
			os.Remove(trig)
		}
		run(t, "mdadm", "--stop", md)
	})
	must(t, "mdadm", "--wait", md)
	t.Logf("created and resynced in %v:\n%s", time.Since(start), readMdstat(t))
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	// 4 KiB blocks and stripe-aligned allocation: under emulation the
	// default 1 KiB blocks of a small file system make mkfs slow on RAID 5.
	must(t, "mkfs.ext4", "-q", "-b", "4096", "-E", "stride=128,stripe_width=512,lazy_itable_init=1,lazy_journal_init=1", md)
	must(t, "mount", md, mnt)
	t.Cleanup(func() { run(t, "umount", mnt) })
	file := filepath.Join(mnt, "data")
	sh(t, "head -c 8M /dev/urandom > "+file+" && sync")
	want := sha(t, file, 0)
	t.Logf("file system made and file written at %v", time.Since(start))

	// First failure: disk 0 fails on the next read; the spare takes its
	// place.
	name0 := filepath.Base(devs[0])
	os.WriteFile(triggers[0], nil, 0o644)
	waitMdstat(t, "disk 0 marked failed", regexp.MustCompile(regexp.QuoteMeta(name0)+`\[\d+\]\(F\)`), file)
	t.Logf("disk 0 failed at %v", time.Since(start))
	st := waitMdRebuilt(t, md)
	t.Logf("after the first failure and the rebuild (%v):\n%s", time.Since(start), st)
	if name5 := filepath.Base(devs[5]); !regexp.MustCompile(regexp.QuoteMeta(name5) + `\[\d+\](\s|$)`).MatchString(st) {
		t.Errorf("the spare %s is not an active member after the rebuild:\n%s", name5, st)
	}
	if got := sha(t, file, 0); got != want {
		t.Fatal("the file changed after the first failure")
	}

	// Second failure: no spare left, the array runs degraded.
	os.WriteFile(triggers[1], nil, 0o644)
	name1 := filepath.Base(devs[1])
	waitMdstat(t, "disk 1 marked failed", regexp.MustCompile(regexp.QuoteMeta(name1)+`\[\d+\]\(F\)`), file)
	st = readMdstat(t)
	t.Logf("after the second failure:\n%s", st)
	if !regexp.MustCompile(`\[5/4\] \[[U_]*_[U_]*\]`).MatchString(st) {
		t.Errorf("/proc/mdstat does not show a degraded array [5/4] [U_UUU]:\n%s", st)
	}
	filterDropCaches(t)
	if got := sha(t, file, 0); got != want {
		t.Error("the file on the degraded array differs from what was written")
	}
	t.Logf("degraded array checked at %v", time.Since(start))
	must(t, "umount", mnt)
	must(t, "mdadm", "--stop", md)
	t.Logf("array stopped at %v", time.Since(start))
	for _, trig := range triggers {
		os.Remove(trig)
	}
	for _, dev := range devs {
		detach(t, dev)
	}
	t.Logf("devices detached at %v", time.Since(start))
	// The failures came from the filter, which logged them.
	logFile := fmt.Sprintf("%s/%s.log", filterStateDir(), name0)
	if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), "error filter: injected EIO into") {
		t.Errorf("%s does not log the injected errors: %v\n%s", logFile, err, b)
	}
}

// waitMdRebuilt waits until the array has all five disks up again, with no
// recovery running, and returns /proc/mdstat.
func waitMdRebuilt(t *testing.T, md string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		run(t, "mdadm", "--wait", md) // exit 1: nothing to wait for
		st := readMdstat(t)
		if strings.Contains(st, "[5/5] [UUUUU]") && !strings.Contains(st, "recovery") {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spare was not rebuilt into the array within 5 minutes:\n%s", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func filterStateDir() string {
	if d := os.Getenv("NBDLOOP_STATE_DIR"); d != "" {
		return d
	}
	return "/run/nbdloop"
}

func readMdstat(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/mdstat")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func filterDropCaches(t *testing.T) {
	t.Helper()
	must(t, "sync")
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitMdstat reads file (from the disks, caches dropped) until
// /proc/mdstat matches re.
func waitMdstat(t *testing.T, what string, re *regexp.Regexp, file string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !re.MatchString(readMdstat(t)) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: /proc/mdstat does not match %s after 60 s:\n%s", what, re, readMdstat(t))
		}
		filterDropCaches(t)
		sha(t, file, 0)
		time.Sleep(100 * time.Millisecond)
	}
}

// filterDirectRead reads n bytes at off from dev with O_DIRECT and returns how
// long the read took.
func filterDirectRead(t *testing.T, dev string, off int64, n int) time.Duration {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := filterAlignedBuf(n)
	start := time.Now()
	if got, err := f.ReadAt(buf, off); got != n || err != nil {
		t.Fatalf("%s: O_DIRECT read of %d bytes at %d = %d, %v", dev, n, off, got, err)
	}
	return time.Since(start)
}

func filterAlignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	a := int(-uintptr(unsafe.Pointer(&b[0])) & 4095)
	return b[a : a+n]
}

// TestKernelFilterDelay: with delay:read=300, a 4 KiB direct read takes at
// least 300 ms, but only while the trigger file exists.
func TestKernelFilterDelay(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	trig := filepath.Join(dir, "slow")
	dev := attachDev(t, "--filter", "delay:read=300,file="+trig, "memory:16M")
	if d := filterDirectRead(t, dev, 8192, 4096); d >= 300*time.Millisecond {
		t.Errorf("a 4 KiB read without the trigger took %v, want less than 300ms", d)
	}
	// The filter sees the file appear asynchronously (inotify, or its
	// poll every second): wait until a read is delayed.
	os.WriteFile(trig, nil, 0o644)
	waitFor(t, 5*time.Second, "a delayed read once the trigger file exists", func() error {
		if d := filterDirectRead(t, dev, 8192, 4096); d < 300*time.Millisecond {
			return fmt.Errorf("a 4 KiB read took %v", d)
		}
		return nil
	})
	for i := range 3 {
		d := filterDirectRead(t, dev, int64(i)*1<<20, 4096)
		t.Logf("4 KiB direct read with a 300 ms delay: %v", d)
		if d < 300*time.Millisecond {
			t.Errorf("a 4 KiB read took %v, want at least 300ms", d)
		}
	}
	os.Remove(trig)
	waitFor(t, 5*time.Second, "a 4 KiB read taking less than 300ms after the trigger was removed", func() error {
		if d := filterDirectRead(t, dev, 8192, 4096); d >= 300*time.Millisecond {
			return fmt.Errorf("a 4 KiB read took %v", d)
		}
		return nil
	})
	detach(t, dev)
}

// TestKernelFilterRate: reads through rate:limit=2M run at 2 MiB/s within
// 10%, and at 4 MiB/s once the rate file says so. (The default burst of
// 100 ms adds at most 100 ms worth of bytes: 2.5% of 4 s here.) The limits
// are low enough for the emulated VM to reach on a busy host (it read 6.9
// MiB/s with 8 readers at load 17).
func TestKernelFilterRate(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	rateFile := filepath.Join(dir, "rate")
	dev := attachDev(t, "--filter", "rate:limit=2M,file="+rateFile, "memory:64M")
	// Eight readers keep requests queued, so the limit, not the readers'
	// own speed under emulation, sets the pace.
	measure := func(total int) float64 {
		const chunk, readers = 256 << 10, 8
		start := time.Now()
		var wg sync.WaitGroup
		for r := range readers {
			wg.Go(func() {
				f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_DIRECT, 0)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				buf := filterAlignedBuf(chunk)
				for off := r * chunk; off < total; off += readers * chunk {
					if _, err := f.ReadAt(buf, int64(off)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return float64(total) / time.Since(start).Seconds()
	}
	for _, step := range []struct {
		file  string
		limit float64
		total int
	}{{"", 2 << 20, 8 << 20}, {"4M\n", 4 << 20, 12 << 20}} {
		if step.file != "" {
			// The filter reads the file again on the first request a
			// second after its last reading: read until it has opened the
			// file (watched after writing it, so the opens seen are the
			// filter's).
			os.WriteFile(rateFile, []byte(step.file), 0o644)
			opened := watchOpens(t, dir)
			waitFor(t, 10*time.Second, "the rate filter to read "+rateFile+" again", func() error {
				filterDirectRead(t, dev, 0, 4096)
				if slices.Contains(opened(), filepath.Base(rateFile)) {
					return nil
				}
				return errors.New("not opened since it was written")
			})
		}
		got := measure(step.total)
		t.Logf("limit %.0f MiB/s: read %d MiB at %.2f MiB/s", step.limit/(1<<20), step.total>>20, got/(1<<20))
		if got < 0.9*step.limit || got > 1.1*step.limit {
			t.Errorf("limit %.0f MiB/s: throughput %.2f MiB/s, want within 10%%", step.limit/(1<<20), got/(1<<20))
		}
	}
	detach(t, dev)
}

// TestKernelFilterCow: a cow filter makes a file that cannot be opened for
// writing (immutable, even for root) a writable disk: mkfs, mount, write and
// read back all work, and the file is unchanged afterwards. The same over
// an xz image.
func TestKernelFilterCow(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "base.img")
	// Mostly zeros, so that xz is quick even under emulation.
	sh(t, "truncate -s 32M "+img+" && head -c 1M /dev/urandom | dd of="+img+" bs=1M seek=20 conv=notrunc status=none")
	xzImg := filepath.Join(dir, "base.img.xz")
	sh(t, "xz -0 -T2 --block-size=1MiB -c "+img+" > "+xzImg)
	for _, tt := range []struct{ name, path string }{{"immutable raw file", img}, {"xz image", xzImg}} {
		t.Run(tt.name, func(t *testing.T) {
			before := sha(t, tt.path, 0)
			must(t, "chattr", "+i", tt.path)
			t.Cleanup(func() { run(t, "chattr", "-i", tt.path) })
			if r := run(t, "sh", "-c", "echo x >> "+tt.path); r.code == 0 {
				t.Fatal("the immutable file could be written: the test proves nothing")
			}
			dev := attachDev(t, "--filter", "cow", tt.path)
			if got := must(t, "blockdev", "--getro", dev); got != "0" {
				t.Errorf("blockdev --getro = %s, want 0 (writable)", got)
			}
			must(t, "mkfs.ext4", "-q", "-b", "4096", dev)
			mnt := filepath.Join(dir, "mnt")
			os.MkdirAll(mnt, 0o755)
			must(t, "mount", dev, mnt)
			sh(t, "head -c 2M /dev/urandom > "+mnt+"/new && echo hello cow > "+mnt+"/hello && sync")
			sum := sha(t, mnt+"/new", 0)
			must(t, "umount", mnt)
			filterDropCaches(t)
			must(t, "e2fsck", "-fn", dev)
			must(t, "mount", dev, mnt)
			if got := sha(t, mnt+"/new", 0); got != sum {
				t.Error("a file written through cow reads back differently after remounting")
			}
			if b, _ := os.ReadFile(mnt + "/hello"); string(b) != "hello cow\n" {
				t.Errorf("hello = %q", b)
			}
			must(t, "umount", mnt)
			detach(t, dev)
			run(t, "chattr", "-i", tt.path)
			if got := sha(t, tt.path, 0); got != before {
				t.Error("the image changed under the cow filter")
			}
		})
	}
}

// TestKernelFilterLog: mkfs.ext4 through the log filter leaves a log whose
// writes cover every superblock, primary and backups, and whose lines all
// have the documented fields.
func TestKernelFilterLog(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	logPath := filepath.Join(dir, "mkfs.jsonl")
	dev := attachDev(t, "-c", "2", "--filter", "log:file="+logPath, "memory:256M")
	start := time.Now()
	must(t, "mkfs.ext4", "-q", "-b", "4096", dev)
	out := must(t, "dumpe2fs", dev)
	detach(t, dev) // the log is complete once the server has exited
	end := time.Now()

	// Superblocks: "Primary superblock at 0", "Backup superblock at 32768".
	var supers []int64
	for _, m := range regexp.MustCompile(`(?m)(?:Primary|Backup) superblock at (\d+)`).FindAllStringSubmatch(out, -1) {
		blk, _ := strconv.ParseInt(m[1], 10, 64)
		off := blk * 4096
		if blk == 0 {
			off = 1024 // the primary superblock is at byte 1024 of block 0
		}
		supers = append(supers, off)
	}
	if len(supers) < 2 {
		t.Fatalf("dumpe2fs shows %d superblocks, want the primary and backups:\n%s", len(supers), out)
	}
	type line struct {
		Time      string   `json:"time"`
		Conn      *int     `json:"conn"`
		Op        string   `json:"op"`
		Offset    *uint64  `json:"offset"`
		Length    *uint32  `json:"length"`
		Flags     *string  `json:"flags"`
		LatencyUS *float64 `json:"latency_us"`
		Error     *string  `json:"error"`
	}
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[string]int{}
	covered := make([]bool, len(supers))
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %d %q: %v", n, sc.Text(), err)
		}
		if l.Conn == nil || l.Offset == nil || l.Length == nil || l.Flags == nil || l.LatencyUS == nil || l.Error == nil {
			t.Fatalf("log line %d %q lacks a field", n, sc.Text())
		}
		tm, err := time.Parse(time.RFC3339Nano, l.Time)
		if err != nil || tm.Before(start.Add(-time.Minute)) || tm.After(end) {
			t.Errorf("log line %d: time %q is not a time of this test", n, l.Time)
		}
		if *l.Conn < 0 || *l.Conn > 1 || *l.LatencyUS < 0 || *l.Error != "" {
			t.Errorf("log line %d: %s", n, sc.Text())
		}
		counts[l.Op]++
		if l.Op != "write" {
			continue
		}
		for i, s := range supers {
			if *l.Offset <= uint64(s) && uint64(s)+1024 <= *l.Offset+uint64(*l.Length) {
				covered[i] = true
			}
		}
	}
	t.Logf("%d log lines: %v", n, counts)
	for i, c := range covered {
		if !c {
			t.Errorf("no logged write covers the superblock at byte %d", supers[i])
		}
	}
	if counts["write"] == 0 || counts["read"] == 0 {
		t.Errorf("log counts %v, want reads and writes", counts)
	}
}

// TestKernelFilterProtect: protect refuses writes to its range only;
// readonly makes the device read-only, or refuses writes while its file
// exists.
func TestKernelFilterProtect(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	write := func(dev string, off int64) bool {
		return run(t, "dd", "if=/dev/urandom", "of="+dev, "bs=4096", "count=1", "oflag=direct", "conv=notrunc", "status=none",
			fmt.Sprintf("seek=%d", off/4096)).code == 0
	}
	t.Run("range", func(t *testing.T) {
		dev := attachDev(t, "--filter", "protect:range=0-1M", "memory:16M")
		for _, c := range []struct {
			off int64
			ok  bool
		}{{0, false}, {1<<20 - 4096, false}, {1 << 20, true}, {8 << 20, true}} {
			if got := write(dev, c.off); got != c.ok {
				t.Errorf("write at %d succeeded: %v, want %v", c.off, got, c.ok)
			}
		}
		filterDropCaches(t)
		if got := sha(t, dev, 1<<20); got != sha(t, "/dev/zero", 1<<20) {
			t.Error("the protected first MiB changed")
		}
		detach(t, dev)
	})
	t.Run("readonly", func(t *testing.T) {
		dev := attachDev(t, "--filter", "readonly", "memory:16M")
		if got := must(t, "blockdev", "--getro", dev); got != "1" {
			t.Errorf("blockdev --getro = %s, want 1", got)
		}
		if write(dev, 0) {
			t.Error("write to a readonly device succeeded")
		}
		detach(t, dev)
	})
	t.Run("readonly while a file exists", func(t *testing.T) {
		trig := filepath.Join(dir, "freeze")
		dev := attachDev(t, "--filter", "readonly:file="+trig, "memory:16M")
		for i, on := range []bool{false, true, false} {
			if on {
				os.WriteFile(trig, nil, 0o644)
			} else {
				os.Remove(trig)
			}
			// The filter sees the change asynchronously (inotify, or its
			// poll every second).
			want := "writes accepted while " + trig + " is absent"
			if on {
				want = "writes refused while " + trig + " exists"
			}
			waitFor(t, 5*time.Second, want, func() error {
				switch got := write(dev, int64(i)*4096); {
				case got && on:
					return errors.New("a write was accepted")
				case !got && !on:
					return errors.New("a write was refused")
				}
				return nil
			})
		}
		detach(t, dev)
	})
}

// TestKernelFilterStats: `stats` shows the requests while attached,
// `list --json` the filters, and `detach --stats` the final numbers.
func TestKernelFilterStats(t *testing.T) {
	requireDriver(t)
	dev := attachDev(t, "--filter", "stats:interval=100ms", "--filter", "error:rate=0", "memory:64M")
	sh(t, "dd if=/dev/urandom of="+dev+" bs=4096 count=100 oflag=direct status=none")
	sh(t, "dd if="+dev+" of=/dev/null bs=64K count=10 skip=10 iflag=direct status=none")
	type snapshot struct {
		Device string `json:"device"`
		Ops    []struct {
			Op      string `json:"op"`
			Count   uint64 `json:"count"`
			Bytes   uint64 `json:"bytes"`
			Latency struct {
				P50 float64 `json:"p50"`
				Max float64 `json:"max"`
			} `json:"latency_us"`
			Sizes []struct {
				MaxBytes uint64 `json:"max_bytes"`
				Count    uint64 `json:"count"`
			} `json:"sizes"`
		} `json:"ops"`
	}
	get := func(s snapshot, op string) (count, bytes uint64, sizes map[uint64]uint64) {
		sizes = map[uint64]uint64{}
		for _, o := range s.Ops {
			if o.Op == op {
				for _, b := range o.Sizes {
					sizes[b.MaxBytes] = b.Count
				}
				if o.Count > 0 && (o.Latency.P50 <= 0 || o.Latency.Max < o.Latency.P50) {
					t.Errorf("%s latency = %+v", op, o.Latency)
				}
				return o.Count, o.Bytes, sizes
			}
		}
		t.Fatalf("stats without %s", op)
		return
	}
	var s snapshot
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := must(t, nbdloop(t), "stats", "--json", dev)
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("stats --json: %v\n%s", err, out)
		}
		if c, _, _ := get(s, "write"); c >= 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats --json did not count 100 writes within 10 s:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s.Device != dev {
		t.Errorf("stats device = %q, want %q", s.Device, dev)
	}
	if c, b, sz := get(s, "write"); c != 100 || b != 100*4096 || sz[4096] != 100 {
		t.Errorf("writes: count %d, bytes %d, sizes %v, want 100 of 4096 bytes", c, b, sz)
	}
	if _, b, _ := get(s, "read"); b < 10*65536 {
		t.Errorf("read bytes = %d, want at least %d", b, 10*65536)
	}
	table := must(t, nbdloop(t), "stats", dev)
	if !strings.Contains(table, "OP") || !regexp.MustCompile(`(?m)^\s*write\s+100\s+0\s+400K\s`).MatchString(table) {
		t.Errorf("stats table:\n%s", table)
	}
	found := false
	for _, d := range listDevicesWithFilters(t) {
		if d.Name == dev {
			found = true
			if strings.Join(d.Filters, " ") != "stats:interval=100ms error:rate=0" {
				t.Errorf("list --json filters = %q", d.Filters)
			}
		}
	}
	if !found {
		t.Errorf("list --json does not show %s", dev)
	}
	r := run(t, nbdloop(t), "detach", "--stats", dev)
	if r.code != 0 || !regexp.MustCompile(`(?m)^\s*write\s+100\s+0\s+400K\s`).MatchString(r.stdout) {
		t.Errorf("detach --stats: exit %d, stdout:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(filterStateDir(), filepath.Base(dev)+".stats.json")); err == nil {
		t.Error("detach left the stats file behind")
	}
	// A device without the filter has no statistics.
	dev = attachDev(t, "memory:16M")
	if r := run(t, nbdloop(t), "stats", dev); r.code != 1 || !strings.Contains(r.stderr, "no statistics (attach with --filter stats") {
		t.Errorf("stats of a device without the filter: exit %d, stderr %q", r.code, r.stderr)
	}
	detach(t, dev)
}

func listDevicesWithFilters(t *testing.T) []struct {
	Name    string   `json:"name"`
	Filters []string `json:"filters"`
} {
	var l struct {
		Devices []struct {
			Name    string   `json:"name"`
			Filters []string `json:"filters"`
		} `json:"devices"`
	}
	out := must(t, nbdloop(t), "list", "--json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	return l.Devices
}
