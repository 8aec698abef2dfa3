package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// The subformats qemu-img makes, each converted from a raw file with data
// and holes. The twoGbMaxExtent ones are just over 2 GiB so that they have
// more than one extent.
var subformats = []struct {
	name     string
	opts     string
	size     int64
	writable bool
}{
	{"monolithicSparse", "subformat=monolithicSparse", 64 << 20, true},
	{"zeroedGrain", "subformat=monolithicSparse,zeroed_grain=on", 64 << 20, true},
	{"monolithicFlat", "subformat=monolithicFlat", 64 << 20, true},
	{"twoGbMaxExtentSparse", "subformat=twoGbMaxExtentSparse", 2<<30 + 64<<20, true},
	{"twoGbMaxExtentFlat", "subformat=twoGbMaxExtentFlat", 2<<30 + 64<<20, true},
	{"streamOptimized", "subformat=streamOptimized", 64 << 20, false},
}

// convert makes dir/disk.vmdk from raw with qemu-img.
func convert(t testing.TB, raw, dir, opts string) string {
	t.Helper()
	img := filepath.Join(dir, "disk.vmdk")
	qemuImg(t, "convert", "-f", "raw", "-O", "vmdk", "-o", opts, raw, img)
	return img
}

// qemuRaw returns what qemu-img reads from img, as a raw file.
func qemuRaw(t testing.TB, img string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "qemu.raw")
	qemuImg(t, "convert", "-f", "vmdk", "-O", "raw", img, out)
	return out
}

func mustOpen(t testing.TB, path string, opts Options) *Disk {
	t.Helper()
	d, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestReadMatchesQemu(t *testing.T) {
	for _, tt := range subformats {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			raw := rawImage(t, dir, tt.size, 1)
			img := convert(t, raw, dir, tt.opts)
			want := qemuRaw(t, img)
			d := mustOpen(t, img, Options{})
			if d.Size() != tt.size {
				t.Fatalf("Size() = %d, want %d", d.Size(), tt.size)
			}
			if got := !d.Caps().ReadOnly; got != tt.writable {
				t.Errorf("writable = %v, want %v (caps %v)", got, tt.writable, d.Caps())
			}
			compareReaders(t, d, openFile(t, want), tt.size)
			randomReads(t, d, openFile(t, want), tt.size)
		})
	}
}

// randomReads compares unaligned reads at random offsets.
func randomReads(t *testing.T, d *Disk, want *os.File, size int64) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		n := 1 + r.Int64N(300000)
		off := r.Int64N(size - n)
		a, b := make([]byte, n), make([]byte, n)
		if _, err := d.ReadAt(a, off); err != nil {
			t.Fatalf("ReadAt(off=%d, len=%d) = %v", off, n, err)
		}
		want.ReadAt(b, off)
		if !bytes.Equal(a, b) {
			t.Fatalf("ReadAt(off=%d, len=%d) differs from qemu-img's", off, n)
		}
	}
}

// mirror applies random writes, zeros and trims to d and to ref, a raw
// file, part of them from concurrent goroutines on disjoint ranges. Trimmed
// ranges are read back and must hold their old bytes or zeros; ref takes
// whatever d then holds.
func mirror(t *testing.T, d *Disk, ref *os.File, size, grain int64, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 9))
	pick := func(r *rand.Rand, lo, hi int64) (int64, int64) {
		var n int64
		switch r.IntN(4) {
		case 0:
			n = 1 + r.Int64N(4096)
		case 1:
			n = grain * (1 + r.Int64N(8))
		default:
			n = 1 + r.Int64N(400000)
		}
		n = min(n, hi-lo)
		var off int64
		switch r.IntN(3) {
		case 0:
			off = lo + r.Int64N(hi-lo-n+1)/grain*grain
		default:
			off = lo + r.Int64N(hi-lo-n+1)
		}
		return off, n
	}
	// Where to aim: split images get most requests near the extent
	// boundary at 2 GiB and the end.
	region := func(r *rand.Rand) (int64, int64) {
		if size > 2<<30 && r.IntN(4) != 0 {
			if r.IntN(2) == 0 {
				return 2<<30 - 8<<20, 2<<30 + 8<<20
			}
			return size - 16<<20, size
		}
		return 0, size
	}
	var refMu sync.Mutex
	op := func(r *rand.Rand, lo, hi int64) error {
		off, n := pick(r, lo, hi)
		switch k := r.IntN(10); {
		case k < 6:
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.Uint32()) | 1
			}
			if _, err := d.WriteAt(b, off); err != nil {
				return fmt.Errorf("WriteAt(off=%d, len=%d) = %v", off, n, err)
			}
			refMu.Lock()
			defer refMu.Unlock()
			_, err := ref.WriteAt(b, off)
			return err
		case k < 8:
			if err := d.Zero(off, n, k == 6); err != nil {
				return fmt.Errorf("Zero(off=%d, len=%d, mayTrim=%v) = %v", off, n, k == 6, err)
			}
			refMu.Lock()
			defer refMu.Unlock()
			_, err := ref.WriteAt(make([]byte, n), off)
			return err
		default:
			refMu.Lock()
			old := make([]byte, n)
			ref.ReadAt(old, off)
			refMu.Unlock()
			if err := d.Trim(off, n); err != nil {
				return fmt.Errorf("Trim(off=%d, len=%d) = %v", off, n, err)
			}
			got := make([]byte, n)
			if _, err := d.ReadAt(got, off); err != nil {
				return err
			}
			for i := range got {
				if got[i] != 0 && got[i] != old[i] {
					return fmt.Errorf("after Trim(off=%d, len=%d): byte at %d = %#x, want 0 or %#x", off, n, off+int64(i), got[i], old[i])
				}
			}
			refMu.Lock()
			defer refMu.Unlock()
			_, err := ref.WriteAt(got, off)
			return err
		}
	}
	for range 150 {
		lo, hi := region(r)
		if err := op(r, lo, hi); err != nil {
			t.Fatal(err)
		}
	}
	// Concurrent: 6 goroutines, each in its own slice of the disk (or of
	// the 2 GiB boundary region), so that their results do not depend on
	// the order.
	lo, hi := int64(0), size
	if size > 2<<30 {
		lo, hi = 2<<30-12<<20, 2<<30+12<<20
	}
	const workers = 6
	part := (hi - lo) / workers
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for range 40 {
				if err := op(r, lo+int64(w)*part, lo+int64(w+1)*part); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// checkWithQemu checks img with qemu-img check and compares it with ref.
func checkWithQemu(t *testing.T, img, ref string) {
	t.Helper()
	qemuImg(t, "check", "-f", "vmdk", img)
	qemuImg(t, "compare", "-f", "vmdk", "-F", "raw", img, ref)
}

func TestWriteMatchesQemu(t *testing.T) {
	for _, tt := range subformats {
		if !tt.writable {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			raw := rawImage(t, dir, tt.size, 2)
			img := convert(t, raw, dir, tt.opts)
			d := mustOpen(t, img, Options{})
			ref, err := os.OpenFile(raw, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			mirror(t, d, ref, tt.size, 64<<10, 5)
			if err := d.Flush(); err != nil {
				t.Fatalf("Flush() = %v", err)
			}
			compareReaders(t, d, ref, tt.size)
			if err := d.Close(); err != nil {
				t.Fatalf("Close() = %v", err)
			}
			checkWithQemu(t, img, raw)
			compareReaders(t, mustOpen(t, img, Options{ReadOnly: true}), ref, tt.size)
		})
	}
}

func TestStreamOptimizedRefusesWrites(t *testing.T) {
	dir := t.TempDir()
	raw := rawImage(t, dir, 8<<20, 3)
	img := convert(t, raw, dir, "subformat=streamOptimized")
	before := sha(t, img)
	d := mustOpen(t, img, Options{})
	if !d.Caps().ReadOnly {
		t.Errorf("Caps() = %v, want read-only", d.Caps())
	}
	if len(d.Warnings()) == 0 || !strings.Contains(d.Warnings()[0], "read-only") {
		t.Errorf("Warnings() = %q, want one about read-only", d.Warnings())
	}
	for name, err := range map[string]error{
		"WriteAt": func() error { _, err := d.WriteAt([]byte{1}, 0); return err }(),
		"Zero":    d.Zero(0, 512, true),
		"Trim":    d.Trim(0, 512),
	} {
		if !errors.Is(err, ErrStreamReadOnly) || !errors.Is(err, sources.ErrReadOnly) {
			t.Errorf("%s = %v, want ErrStreamReadOnly", name, err)
		}
	}
	d.Close()
	if sha(t, img) != before {
		t.Error("the image changed")
	}
}

func sha(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b) // small images only
}

// delta makes base.vmdk from a raw file and top.vmdk on it, with some
// data written to the top by qemu-io; it returns the top's path.
func delta(t testing.TB, dir string, size int64) string {
	t.Helper()
	raw := rawImage(t, dir, size, 4)
	qemuImg(t, "convert", "-f", "raw", "-O", "vmdk", raw, filepath.Join(dir, "base.vmdk"))
	os.Remove(raw)
	top := filepath.Join(dir, "top.vmdk")
	qemuImg(t, "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", top)
	qemuIO(t, top, "write -P 0xab 100k 3k", "write -P 0xcd 1M 200k", "write -P 0 4M 64k")
	return top
}

func TestDeltaMatchesQemu(t *testing.T) {
	dir := t.TempDir()
	const size = 32 << 20
	top := delta(t, dir, size)
	want := qemuRaw(t, top)
	d := mustOpen(t, top, Options{})
	compareReaders(t, d, openFile(t, want), size)

	ref, err := os.OpenFile(want, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	base := sha(t, filepath.Join(dir, "base.vmdk"))
	mirror(t, d, ref, size, 64<<10, 6)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	checkWithQemu(t, top, want)
	if sha(t, filepath.Join(dir, "base.vmdk")) != base {
		t.Error("writes to the delta changed its parent")
	}
}

func TestDeltaParentCIDMismatch(t *testing.T) {
	dir := t.TempDir()
	top := delta(t, dir, 8<<20)
	// Give the parent a new CID, as a write to it by qemu would.
	base := filepath.Join(dir, "base.vmdk")
	qemuIO(t, base, "write -P 1 0 512")
	_, err := Open(top, Options{})
	if err == nil || !strings.Contains(err.Error(), "parent changed") {
		t.Fatalf("Open after the parent changed = %v, want a CID error", err)
	}
}

func TestParentLoop(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.vmdk")
	b := filepath.Join(dir, "b.vmdk")
	qemuImg(t, "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", filepath.Join(dir, "x.vmdk"), "1M")
	desc := func(parent string) string {
		return "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=1\ncreateType=\"monolithicFlat\"\nparentFileNameHint=\"" + parent + "\"\nRW 2048 FLAT \"x-flat.vmdk\" 0\n"
	}
	os.WriteFile(a, []byte(desc("b.vmdk")), 0o644)
	os.WriteFile(b, []byte(desc("a.vmdk")), 0o644)
	_, err := Open(a, Options{ReadOnly: true})
	if err == nil || !strings.Contains(err.Error(), "loops") {
		t.Fatalf("Open(a loop of parents) = %v, want a loop error", err)
	}
}

// TestNewGrainTable removes a grain table from a qemu image (directory
// entries 0, in both directories) and writes into its range: the write
// must allocate new tables that qemu then reads.
func TestNewGrainTable(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 20
	img := filepath.Join(dir, "disk.vmdk")
	qemuImg(t, "create", "-f", "vmdk", img, "64M")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	hb := make([]byte, 512)
	f.ReadAt(hb, 0)
	h, err := parseHeader(hb)
	if err != nil {
		t.Fatal(err)
	}
	for _, dirOff := range []uint64{h.gdOffset, h.rgdOffset} {
		f.WriteAt(make([]byte, 4), int64(dirOff)*512+4) // entry 1: 32..64 MiB
	}
	f.Close()
	ref := filepath.Join(dir, "ref.raw")
	rf, err := os.Create(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	rf.Truncate(size)
	d := mustOpen(t, img, Options{})
	data := bytes.Repeat([]byte("new grain table "), 5000)
	for _, off := range []int64{32<<20 + 1000, 40 << 20, size - int64(len(data))} {
		if _, err := d.WriteAt(data, off); err != nil {
			t.Fatalf("WriteAt(%d) = %v", off, err)
		}
		rf.WriteAt(data, off)
	}
	compareReaders(t, d, rf, size)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	checkWithQemu(t, img, ref)
	// Both directories point at the new tables.
	f = openFile(t, img)
	var gd, rgd [4]byte
	f.ReadAt(gd[:], int64(h.gdOffset)*512+4)
	f.ReadAt(rgd[:], int64(h.rgdOffset)*512+4)
	if binary.LittleEndian.Uint32(gd[:]) == 0 || binary.LittleEndian.Uint32(rgd[:]) == 0 || gd == rgd {
		t.Errorf("directory entries after the write: gd %x, rgd %x, want two different tables", gd, rgd)
	}
}

// TestZeroedGrainZero: zeroing whole grains of a zeroed_grain=on image
// marks them (GTE 1) without growing the file, and qemu reads zeros there.
func TestZeroedGrainZero(t *testing.T) {
	dir := t.TempDir()
	const size = 16 << 20
	raw := rawImage(t, dir, size, 8)
	f, _ := os.OpenFile(raw, os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat([]byte{7}, 4<<20), 4<<20)
	img := convert(t, raw, dir, "subformat=monolithicSparse,zeroed_grain=on")
	before := fileSize(t, img)
	d := mustOpen(t, img, Options{})
	if err := d.Zero(4<<20, 4<<20, true); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 4<<20), 4<<20)
	f.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if after := fileSize(t, img); after != before {
		t.Errorf("file grew from %d to %d bytes on a whole-grain zero", before, after)
	}
	checkWithQemu(t, img, raw)
	d = mustOpen(t, img, Options{ReadOnly: true})
	e := d.extents[0].sp
	var buf [64]uint32
	n, err := e.gtes((4<<20)/e.grainBytes, buf[:])
	if err != nil || n == 0 || buf[0] != gteZeroed {
		t.Errorf("GTE of a zeroed grain = %d (n %d, %v), want %d", buf[0], n, err, gteZeroed)
	}
}

// TestFooter: a streamOptimized file whose header says GD_AT_END, with the
// real header in a footer at the end (as VMware writes them), reads the
// same as before.
func TestFooter(t *testing.T) {
	dir := t.TempDir()
	const size = 8 << 20
	raw := rawImage(t, dir, size, 9)
	img := convert(t, raw, dir, "subformat=streamOptimized")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%512 != 0 {
		b = append(b, make([]byte, 512-len(b)%512)...)
	}
	footer := make([]byte, 3*512)
	binary.LittleEndian.PutUint64(footer, 1)
	binary.LittleEndian.PutUint32(footer[12:], markerFooter)
	copy(footer[512:], b[:512])
	binary.LittleEndian.PutUint64(b[56:], gdAtEnd)
	b = append(b, footer...)
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, img, Options{})
	compareReaders(t, d, openFile(t, raw), size)
	compareReaders(t, d, openFile(t, qemuRaw(t, img)), size)
}

func TestConformance(t *testing.T) {
	const size = 8 << 20
	for _, tt := range []struct{ name, opts string }{
		{"monolithicSparse", "subformat=monolithicSparse"},
		{"zeroedGrain", "subformat=monolithicSparse,zeroed_grain=on"},
		{"monolithicFlat", "subformat=monolithicFlat"},
		{"streamOptimized", "subformat=streamOptimized"},
		{"delta", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := t.TempDir()
			var img string
			if tt.opts == "" {
				img = delta(t, tmpl, size)
			} else {
				img = convert(t, rawImage(t, tmpl, size, 10), tmpl, tt.opts)
				os.Remove(filepath.Join(tmpl, "raw.img"))
			}
			want, err := os.ReadFile(qemuRaw(t, img))
			if err != nil {
				t.Fatal(err)
			}
			sourcetest.Run(t, func(t *testing.T) sources.Source {
				d, err := Open(filepath.Join(copyDir(t, tmpl), filepath.Base(img)), Options{})
				if err != nil {
					t.Fatal(err)
				}
				return d
			}, want)
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	qemuImg(t, "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", filepath.Join(dir, "f.vmdk"), "1M")
	tests := []struct {
		name, path, want string
	}{
		{"no extents", write("a.vmdk", "# Disk DescriptorFile\nversion=1\nCID=1\n"), "no extent"},
		{"missing extent file", write("b.vmdk", "# Disk DescriptorFile\nRW 100 FLAT \"nope\" 0\n"), "no such file"},
		{"flat file too short", write("c.vmdk", "# Disk DescriptorFile\nRW 4096 FLAT \"f-flat.vmdk\" 0\n"), "extent needs"},
		{"vmfssparse", write("d.vmdk", "# Disk DescriptorFile\nRW 100 VMFSSPARSE \"f-flat.vmdk\"\n"), "not supported"},
		{"not vmdk", write("e.vmdk", "hello"), "not a VMDK"},
		{"missing parent", write("g.vmdk", "# Disk DescriptorFile\nparentCID=1\nparentFileNameHint=\"nope.vmdk\"\nRW 100 FLAT \"f-flat.vmdk\" 0\n"), "opening the parent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Open(tt.path, Options{})
			if err == nil {
				d.Close()
				t.Fatalf("Open = nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestAccessModes: RDONLY extents refuse writes with EPERM, NOACCESS ones
// fail reads, ZERO extents read zeros; the disk says so in Warnings.
func TestAccessModes(t *testing.T) {
	dir := t.TempDir()
	qemuImg(t, "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", filepath.Join(dir, "f.vmdk"), "1M")
	os.WriteFile(filepath.Join(dir, "f-flat.vmdk"), bytes.Repeat([]byte{9}, 1<<20), 0o644)
	p := filepath.Join(dir, "m.vmdk")
	os.WriteFile(p, []byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"+
		"RW 8 FLAT \"f-flat.vmdk\" 0\nRDONLY 8 FLAT \"f-flat.vmdk\" 8\nRW 8 ZERO\nNOACCESS 8 FLAT \"f-flat.vmdk\" 24\n"), 0o644)
	d := mustOpen(t, p, Options{})
	if d.Size() != 32*512 || d.Caps().ReadOnly {
		t.Fatalf("Size %d, caps %v", d.Size(), d.Caps())
	}
	if len(d.Warnings()) != 2 {
		t.Errorf("Warnings() = %q, want RDONLY and NOACCESS lines", d.Warnings())
	}
	buf := make([]byte, 24*512)
	if _, err := d.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:16*512], bytes.Repeat([]byte{9}, 16*512)) || !bytes.Equal(buf[16*512:], make([]byte, 8*512)) {
		t.Error("FLAT and ZERO extents read back wrong")
	}
	if _, err := d.WriteAt([]byte{1}, 0); err != nil {
		t.Errorf("write to RW: %v", err)
	}
	if _, err := d.WriteAt([]byte{1}, 8*512); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("write to RDONLY = %v, want ErrReadOnly", err)
	}
	if _, err := d.ReadAt(buf[:1], 24*512); err == nil {
		t.Error("read of NOACCESS succeeded")
	}
	if err := d.Zero(16*512, 8*512, true); err != nil {
		t.Errorf("Zero of a ZERO extent = %v", err)
	}
}

// TestLargeSparseDisk: a 300 GiB sparse disk is written near its end.
func TestLargeSparseDisk(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "big.vmdk")
	qemuImg(t, "create", "-f", "vmdk", img, "300G")
	d := mustOpen(t, img, Options{})
	data := []byte("at the end of a big disk")
	off := d.Size() - 4096
	if _, err := d.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	d.ReadAt(got, off)
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %q", got)
	}
	d.Close()
	qemuImg(t, "check", img)
	tooltest.Require(t, "qemu-io")
	out, err := exec.Command("qemu-io", "-f", "vmdk", "-c", fmt.Sprintf("read -P 0x61 %d 1", off), img).CombinedOutput()
	if err != nil || strings.Contains(string(out), "fail") {
		t.Errorf("qemu-io read: %v %s", err, out)
	}
}

// TestWriteChangesCID: the first write gives the disk a new CID (embedded
// and text descriptors alike), so a delta made from it before no longer
// opens, and qemu still reads the disk.
func TestWriteChangesCID(t *testing.T) {
	for _, opts := range []string{"subformat=monolithicSparse", "subformat=monolithicFlat"} {
		t.Run(opts, func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base.vmdk")
			qemuImg(t, "create", "-f", "vmdk", "-o", opts, base, "4M")
			top := filepath.Join(dir, "top.vmdk")
			qemuImg(t, "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", top)
			mustOpen(t, top, Options{ReadOnly: true}).Close()
			d := mustOpen(t, base, Options{})
			old := d.desc.CID
			if _, err := d.WriteAt([]byte("x"), 0); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d = mustOpen(t, base, Options{ReadOnly: true})
			if d.desc.CID == old {
				t.Errorf("CID still %08x after a write", old)
			}
			if _, err := Open(top, Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "parent changed") {
				t.Errorf("Open(delta of a changed base) = %v, want a CID error", err)
			}
			qemuImg(t, "check", base)
			out := qemuImg(t, "info", base)
			if !strings.Contains(out, fmt.Sprintf("cid: %d", d.desc.CID)) {
				t.Errorf("qemu-img info does not show cid %d:\n%s", d.desc.CID, out)
			}
		})
	}
}

// TestRefusesSpecialFiles: a descriptor naming a FIFO or a character
// device fails Open at once instead of blocking in open(2) or reading
// forever, even where its directory is allowed.
func TestRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if out, err := exec.Command("mkfifo", fifo).CombinedOutput(); err != nil {
		t.Fatalf("mkfifo: %v %s", err, out)
	}
	for _, target := range []string{fifo, "/dev/zero"} {
		for _, line := range []string{`RW 8 FLAT "` + target + `" 0`, `RW 8 SPARSE "` + target + `"`} {
			p := filepath.Join(dir, "d.vmdk")
			os.WriteFile(p, []byte("# Disk DescriptorFile\n"+line+"\n"), 0o644)
			named := sources.NamedFiles{Dir: dir, Allow: []string{"/dev"}}
			if _, err := Open(p, Options{Named: named}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("Open(%s) = %v, want a file type error", line, err)
			}
		}
	}
}

// TestParentChainCap: a chain of more than 16 parents is refused.
func TestParentChainCap(t *testing.T) {
	dir := t.TempDir()
	qemuImg(t, "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", filepath.Join(dir, "x.vmdk"), "1M")
	for _, n := range []int{maxParents, maxParents + 1} {
		for i := 0; i <= n; i++ {
			parent := ""
			if i < n {
				parent = fmt.Sprintf("parentCID=1\nparentFileNameHint=\"d%d.vmdk\"\n", i+1)
			}
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("d%d.vmdk", i)), []byte("# Disk DescriptorFile\nCID=1\n"+parent+"RW 2048 FLAT \"x-flat.vmdk\" 0\n"), 0o644)
		}
		d, err := Open(filepath.Join(dir, "d0.vmdk"), Options{ReadOnly: true})
		if n == maxParents {
			if err != nil {
				t.Fatalf("Open(a chain of %d parents) = %v", n, err)
			}
			d.Close()
		} else if err == nil || !strings.Contains(err.Error(), "parents in the chain") {
			t.Fatalf("Open(a chain of %d parents) = %v, want a chain error", n, err)
		}
	}
}
