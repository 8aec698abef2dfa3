package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// hostileBudget is the metadata limit TestHostileVMDK sets, and the bound
// on what the heap may allocate during Open and a few reads.
const hostileBudget = 64 << 20

// kdmv returns a small valid sparse extent (64 sectors, grains of 8, 4
// GTEs per table, a redundant directory, grains 0 and 3 allocated) with
// its header changed by mod.
func kdmv(mod func(h []byte)) []byte {
	b := tinySparse(64, 8, 4, flagRGD, "", func(i int) []byte {
		if i == 0 || i == 3 {
			return bytes.Repeat([]byte{byte(0x10 + i)}, 8*512)
		}
		return nil
	})
	if mod != nil {
		mod(b[:512])
	}
	return b
}

// le64 and le32 set a header field.
func le64(off int, v uint64) func([]byte) {
	return func(h []byte) { binary.LittleEndian.PutUint64(h[off:], v) }
}

func le32(off int, v uint32) func([]byte) {
	return func(h []byte) { binary.LittleEndian.PutUint32(h[off:], v) }
}

// Header field offsets.
const (
	hCapacity   = 12
	hGrain      = 20
	hDescOffset = 28
	hDescSize   = 36
	hNumGTEs    = 44
	hRGD        = 48
	hGD         = 56
)

// bigDirectory is a 5 MiB sparse extent whose header claims 2 TiB of 4 KiB
// grains: a grain directory of 2^20 entries (4 MiB), all 0, the redundant
// directory on top of it.
func bigDirectory() []byte {
	b := make([]byte, 5<<20)
	copy(b, kdmv(nil)[:512])
	for _, f := range []func([]byte){le64(hCapacity, 1<<32), le64(hGrain, 8), le32(hNumGTEs, 512), le64(hRGD, 1), le64(hGD, 1), le64(hDescOffset, 0), le64(hDescSize, 0)} {
		f(b[:512])
	}
	return b
}

// streamHeader is a compressed extent (streamOptimized, markers) of one
// 1 MiB grain, not allocated.
func streamHeader() []byte {
	b := make([]byte, 4096)
	copy(b, kdmv(nil)[:512])
	for _, f := range []func([]byte){le32(8, flagNewlineTest|flagCompressed|flagMarkers), le64(hCapacity, 2048), le64(hGrain, 2048), le32(hNumGTEs, 512), le64(hRGD, 0), le64(hGD, 1), le64(hDescOffset, 0), le64(hDescSize, 0)} {
		f(b[:512])
	}
	binary.LittleEndian.PutUint16(b[77:], compressDeflate)
	return b
}

// descriptorOf is a descriptor with the given lines after the header.
func descriptorOf(lines ...string) string {
	return "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"custom\"\n" + strings.Join(lines, "\n") + "\n"
}

// repeatLine is n copies of line.
func repeatLine(line string, n int) []string {
	l := make([]string, n)
	for i := range l {
		l[i] = line
	}
	return l
}

// writableFDs lists the files beneath dir that this process holds open for
// writing.
func writableFDs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var w []string
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(target, dir+"/") {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "flags:"); ok {
				flags, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if flags&3 != 0 {
					w = append(w, target)
				}
			}
		}
	}
	return w
}

// TestHostileVMDK opens hostile images: names leading outside the image's
// directory (by "..", absolute paths, symbolic links), FIFOs and devices,
// parent loops, headers with extreme fields, descriptors whose extents
// claim more memory than the budget; and valid split and flat images,
// which must still work read-write. Each either fails Open with a clear
// error or serves the right bytes, within the memory budget, touching
// nothing outside its directory.
func TestHostileVMDK(t *testing.T) {
	o := imagetest.NewOutside(t)
	dir := o.Dir
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	desc := func(name string, lines ...string) func(t *testing.T) string {
		return func(t *testing.T) string { return write(name, []byte(descriptorOf(lines...))) }
	}
	sparseFile := func(name string, b []byte) func(t *testing.T) string {
		return func(t *testing.T) string { return write(name, b) }
	}
	write("flat.img", bytes.Repeat([]byte{0xF1}, 1<<20))
	write("sparse.vmdk", kdmv(nil))
	write("bigdir.vmdk", bigDirectory())
	write("stream.vmdk", streamHeader())
	if err := os.Symlink(o.Canary, filepath.Join(dir, "canary-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(o.Out, filepath.Join(dir, "outdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside/canary", filepath.Join(dir, "relative-link")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfifo", filepath.Join(dir, "fifo")).CombinedOutput(); err != nil {
		t.Fatalf("mkfifo: %v %s", err, out)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	qemuImg(t, "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", filepath.Join(dir, "split.vmdk"), "3G")
	qemuImg(t, "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", filepath.Join(dir, "mflat.vmdk"), "4M")
	qemuImg(t, "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", filepath.Join(dir, "ssplit.vmdk"), "3G")
	qemuImg(t, "create", "-q", "-f", "vmdk", filepath.Join(dir, "base.vmdk"), "4M")
	qemuIO(t, filepath.Join(dir, "base.vmdk"), "write -P 0xb5 0 1M")
	qemuImg(t, "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", filepath.Join(dir, "delta.vmdk"))

	// readRW writes a pattern at the start and end and across the first
	// extent boundary, reads it back, and after Close has qemu-io read it.
	readRW := func(boundary int64) func(t *testing.T, d *Disk, path string) {
		return func(t *testing.T, d *Disk, path string) {
			if d.Caps().ReadOnly {
				t.Fatalf("a valid image opened read-only: %v", d.Warnings())
			}
			offs := []int64{0, d.Size() - 4096}
			if boundary > 0 {
				offs = append(offs, boundary-2048)
			}
			for i, off := range offs {
				p := bytes.Repeat([]byte{byte(0xA0 + i)}, 4096)
				if _, err := d.WriteAt(p, off); err != nil {
					t.Fatalf("WriteAt(%d): %v", off, err)
				}
				got := make([]byte, 4096)
				if _, err := d.ReadAt(got, off); err != nil || !bytes.Equal(got, p) {
					t.Fatalf("ReadAt(%d) = %v, the pattern written not read back", off, err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			for i, off := range offs {
				qemuIO(t, path, fmt.Sprintf("read -P %#x %d 4096", 0xA0+i, off))
			}
		}
	}
	zeros := func(t *testing.T, d *Disk, _ string) {
		buf := make([]byte, 64<<10)
		for _, off := range []int64{0, d.Size() / 2, d.Size() - int64(len(buf))} {
			if _, err := d.ReadAt(buf, off); err != nil {
				t.Fatalf("ReadAt(%d): %v", off, err)
			}
			if !bytes.Equal(buf, make([]byte, len(buf))) {
				t.Fatalf("ReadAt(%d): not zeros", off)
			}
		}
	}
	readFails := func(want string) func(t *testing.T, d *Disk, _ string) {
		return func(t *testing.T, d *Disk, _ string) {
			buf := make([]byte, 4096)
			if _, err := d.ReadAt(buf, 0); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("ReadAt = %v, want %q", err, want)
			}
		}
	}
	readOnlyFDs := func(t *testing.T, d *Disk, _ string) {
		if w := writableFDs(t, dir); len(w) > 0 {
			t.Fatalf("files open for writing: %q", w)
		}
		buf := make([]byte, 4096)
		if _, err := d.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name     string
		setup    func(t *testing.T) string
		readOnly bool
		named    func(n *sources.NamedFiles)
		want     string // a substring of Open's error; "" if it opens
		confined bool   // the error must be a confinement refusal
		check    func(t *testing.T, d *Disk, path string)
	}{
		{name: "dotdot flat extent", setup: desc("dotdot.vmdk", `RW 2048 FLAT "../outside/canary" 0`), want: "--allow-path " + o.Out, confined: true},
		{name: "dotdot deep", setup: desc("deep.vmdk", `RW 8 FLAT "sub/../../../../../../etc/shadow" 0`), want: `"sub/../../../../../../etc/shadow" (/etc/shadow): outside`, confined: true},
		{name: "absolute flat extent", setup: desc("abs.vmdk", `RW 2048 FLAT "`+o.Canary+`" 0`), want: "extent 1 (RW FLAT)", confined: true},
		{name: "absolute sparse extent, read-only", setup: desc("abssparse.vmdk", `RDONLY 2048 SPARSE "`+o.Canary+`"`), readOnly: true, want: "outside", confined: true},
		{name: "absolute VMFSRAW extent", setup: desc("vmfsraw.vmdk", `RW 2048 VMFSRAW "`+o.Canary+`"`), want: "outside", confined: true},
		{name: "symlink extent", setup: desc("link.vmdk", `RW 2048 FLAT "canary-link" 0`), want: "symbolic link leads outside", confined: true},
		{name: "relative symlink extent", setup: desc("rlink.vmdk", `RW 2048 FLAT "relative-link" 0`), want: "symbolic link leads outside", confined: true},
		{name: "symlinked directory extent", setup: desc("dlink.vmdk", `RW 2048 FLAT "outdir/canary" 0`), want: "symbolic link leads outside", confined: true},
		{name: "fifo extent", setup: desc("fifo.vmdk", `RW 8 FLAT "fifo" 0`), want: "a FIFO", confined: true},
		{name: "fifo sparse extent", setup: desc("fifos.vmdk", `RW 8 SPARSE "fifo"`), want: "a FIFO", confined: true},
		{name: "/dev/zero extent", setup: desc("zero.vmdk", `RW 8 FLAT "/dev/zero" 0`), want: "--allow-path /dev", confined: true},
		{name: "/dev/zero extent, /dev allowed", setup: desc("zero2.vmdk", `RW 8 FLAT "/dev/zero" 0`),
			named: func(n *sources.NamedFiles) { n.Allow = []string{"/dev"} }, want: "a character device", confined: true},
		{name: "directory extent", setup: desc("dir.vmdk", `RW 8 FLAT "sub" 0`), want: "a directory", confined: true},
		{name: "extent is the image directory", setup: desc("dot.vmdk", `RW 8 FLAT "." 0`), want: "outside", confined: true},
		{name: "read-only disk, RW extent", setup: desc("ro.vmdk", `RW 2048 FLAT "flat.img" 0`), readOnly: true, check: readOnlyFDs},
		{name: "4096 small extents of one sparse file", setup: desc("many.vmdk", repeatLine(`RW 8 SPARSE "bigdir.vmdk"`, maxExtents)...), check: zeros},
		{name: "4096 small extents, read-only", setup: desc("manyro.vmdk", repeatLine(`RW 8 SPARSE "bigdir.vmdk"`, maxExtents)...), readOnly: true, check: zeros},
		{name: "4096 extents of 2 TiB of one sparse file", setup: desc("huge.vmdk", repeatLine(`RW 4294967296 SPARSE "bigdir.vmdk"`, maxExtents)...), want: "beyond the metadata limit of 64 MiB"},
		{name: "4096 compressed extents of 1 MiB grains", setup: desc("streams.vmdk", repeatLine(`RW 2048 SPARSE "stream.vmdk"`, maxExtents)...), readOnly: true, want: "beyond the metadata limit"},
		{name: "4096 flat extents of one file", setup: desc("flats.vmdk", repeatLine(`RW 8 FLAT "flat.img" 0`, maxExtents)...), check: readOnlyFDs, readOnly: true},
		{name: "extents add up past 2^63", setup: desc("sum.vmdk", `RW 18014398509481983 ZERO`, `RW 1 ZERO`), want: "add up to more than 2^63"},
		{name: "one extent of 2^63 bytes", setup: desc("big.vmdk", `RW 18014398509481984 ZERO`), want: "sector count"},
		{name: "flat offset overflows", setup: desc("off.vmdk", `RW 8 FLAT "flat.img" 18014398509481980`), want: "offset"},
		{name: "flat offset past the file", setup: desc("off2.vmdk", `RW 8 FLAT "flat.img" 4096`), want: "past the end of the file"},
		{name: "parent loop", setup: func(t *testing.T) string {
			write("loop-b.vmdk", []byte("# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\"loop-a.vmdk\"\nRW 8 FLAT \"flat.img\" 0\n"))
			return write("loop-a.vmdk", []byte("# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\"loop-b.vmdk\"\nRW 8 FLAT \"flat.img\" 0\n"))
		}, want: "loops back"},
		{name: "parent is itself", setup: func(t *testing.T) string {
			return write("self.vmdk", []byte("# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\"self.vmdk\"\nRW 8 FLAT \"flat.img\" 0\n"))
		}, want: "loops back"},
		{name: "parent outside by dotdot", setup: func(t *testing.T) string {
			return write("pdot.vmdk", []byte("# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\"../outside/canary\"\nRW 8 FLAT \"flat.img\" 0\n"))
		}, want: "opening the parent (parentFileNameHint)", confined: true},
		{name: "parent absolute", setup: func(t *testing.T) string {
			return write("pabs.vmdk", []byte("# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\""+o.Canary+"\"\nRW 8 FLAT \"flat.img\" 0\n"))
		}, want: "--allow-path", confined: true},
		{name: "parent symlink out", setup: func(t *testing.T) string {
			return write("plink.vmdk", []byte("# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\"canary-link\"\nRW 8 FLAT \"flat.img\" 0\n"))
		}, want: "symbolic link", confined: true},
		{name: "parent fifo", setup: func(t *testing.T) string {
			return write("pfifo.vmdk", []byte("# Disk DescriptorFile\nCID=1\nparentCID=1\nparentFileNameHint=\"fifo\"\nRW 8 FLAT \"flat.img\" 0\n"))
		}, want: "a FIFO", confined: true},
		{name: "parent's extent outside", setup: func(t *testing.T) string {
			write("pp.vmdk", []byte("# Disk DescriptorFile\nCID=7\nRW 8 FLAT \""+o.Canary+"\" 0\n"))
			return write("pchild.vmdk", []byte("# Disk DescriptorFile\nCID=1\nparentCID=7\nparentFileNameHint=\"pp.vmdk\"\nRW 8 SPARSE \"sparse.vmdk\"\n"))
		}, want: "outside", confined: true},
		{name: "grain directory of 2^23 entries", setup: sparseFile("gd23.vmdk", kdmv(func(h []byte) { le64(hCapacity, 1<<32)(h); le64(hGrain, 1)(h); le32(hNumGTEs, 512)(h) })), want: "grain directory of 8388608 entries"},
		{name: "grain directory of 2^20 entries, 4 KiB file", setup: sparseFile("gd20.vmdk", kdmv(func(h []byte) { le64(hCapacity, 1<<32)(h); le64(hGrain, 8)(h); le32(hNumGTEs, 512)(h) })), want: "lie outside"},
		{name: "grain directory of 2^20 entries, 5 MiB file", setup: sparseFile("gd20b.vmdk", bigDirectory()), check: zeros},
		{name: "grain directory offset max-1", setup: sparseFile("gdmax1.vmdk", kdmv(le64(hGD, 1<<64-2))), want: "lie outside"},
		{name: "grain directory offset 2^55", setup: sparseFile("gd55.vmdk", kdmv(le64(hGD, 1<<55))), want: "lie outside"},
		{name: "grain directory at end, no footer", setup: sparseFile("gdend.vmdk", kdmv(le64(hGD, 1<<64-1))), want: "footer"},
		{name: "grain directory offset 0", setup: sparseFile("gd0.vmdk", kdmv(le64(hGD, 0))), want: "lie outside"},
		{name: "redundant directory offset max", setup: sparseFile("rgdmax.vmdk", kdmv(le64(hRGD, 1<<64-1))), want: "redundant grain directory"},
		{name: "redundant directory offset max, read-only", setup: sparseFile("rgdmaxro.vmdk", kdmv(le64(hRGD, 1<<64-1))), readOnly: true, check: readOnlyFDs},
		{name: "capacity max", setup: sparseFile("capmax.vmdk", kdmv(le64(hCapacity, 1<<64-1))), want: "capacity"},
		{name: "capacity 2^63/512", setup: sparseFile("cap63.vmdk", kdmv(le64(hCapacity, 1<<54))), want: "capacity"},
		{name: "capacity 2^32+1", setup: sparseFile("cap33.vmdk", kdmv(le64(hCapacity, 1<<32+1))), want: "capacity"},
		{name: "capacity 0", setup: sparseFile("cap0.vmdk", kdmv(le64(hCapacity, 0))), want: "capacity"},
		{name: "grain size max", setup: sparseFile("grmax.vmdk", kdmv(le64(hGrain, 1<<64-1))), want: "grain size"},
		{name: "grain size 2^63", setup: sparseFile("gr63.vmdk", kdmv(le64(hGrain, 1<<63))), want: "grain size"},
		{name: "grain size 0", setup: sparseFile("gr0.vmdk", kdmv(le64(hGrain, 0))), want: "grain size"},
		{name: "GTEs per table max", setup: sparseFile("gtemax.vmdk", kdmv(le32(hNumGTEs, 1<<32-1))), want: "entries per grain table"},
		{name: "GTEs per table 0", setup: sparseFile("gte0.vmdk", kdmv(le32(hNumGTEs, 0))), want: "entries per grain table"},
		{name: "embedded descriptor size wraps", setup: sparseFile("dsz.vmdk", kdmv(func(h []byte) { le64(hDescOffset, 1)(h); le64(hDescSize, 1<<55+1)(h) })), want: "embedded descriptor"},
		{name: "embedded descriptor offset max", setup: sparseFile("doff.vmdk", kdmv(func(h []byte) { le64(hDescOffset, 1<<64-1)(h); le64(hDescSize, 1)(h) })), want: "embedded descriptor lies outside"},
		{name: "embedded descriptor offset 2^55", setup: sparseFile("doff55.vmdk", kdmv(func(h []byte) { le64(hDescOffset, 1<<55)(h); le64(hDescSize, 1)(h) })), want: "embedded descriptor lies outside"},
		{name: "grain table outside the file", setup: func(t *testing.T) string {
			b := kdmv(nil)
			gd := binary.LittleEndian.Uint64(b[hGD:])
			binary.LittleEndian.PutUint32(b[gd*512:], 1<<32-1)
			return write("gtout.vmdk", b)
		}, check: readFails("corrupt sparse extent")},
		{name: "grain outside the file", setup: func(t *testing.T) string {
			b := kdmv(nil)
			gd := binary.LittleEndian.Uint64(b[hGD:])
			gt := binary.LittleEndian.Uint32(b[gd*512:])
			binary.LittleEndian.PutUint32(b[int(gt)*512:], 1<<32-1)
			return write("grout.vmdk", b)
		}, check: readFails("past the end of the file")},
		{name: "grain in the header, written", setup: func(t *testing.T) string {
			b := kdmv(nil)
			gd := binary.LittleEndian.Uint64(b[hGD:])
			gt := binary.LittleEndian.Uint32(b[gd*512:])
			binary.LittleEndian.PutUint32(b[int(gt)*512:], 0)
			binary.LittleEndian.PutUint32(b[int(gt)*512:], 2) // grain 0 at sector 2, in the metadata
			return write("grhdr.vmdk", b)
		}, check: func(t *testing.T, d *Disk, _ string) {
			if _, err := d.WriteAt(make([]byte, 512), 0); err == nil || !strings.Contains(err.Error(), "into the metadata") {
				t.Fatalf("WriteAt over the metadata = %v", err)
			}
		}},
		{name: "valid twoGbMaxExtentFlat, read-write", setup: func(t *testing.T) string { return filepath.Join(dir, "split.vmdk") }, check: readRW(2 << 30)},
		{name: "valid monolithicFlat, read-write", setup: func(t *testing.T) string { return filepath.Join(dir, "mflat.vmdk") }, check: readRW(0)},
		{name: "valid twoGbMaxExtentSparse, read-write", setup: func(t *testing.T) string { return filepath.Join(dir, "ssplit.vmdk") }, check: readRW(2 << 30)},
		{name: "valid delta, parent read-only", setup: func(t *testing.T) string { return filepath.Join(dir, "delta.vmdk") }, check: func(t *testing.T, d *Disk, path string) {
			got := make([]byte, 4096)
			if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0xb5}, 4096)) {
				t.Fatalf("the parent's data is not read through: %v", err)
			}
			if w := writableFDs(t, dir); len(w) != 1 || filepath.Base(w[0]) != "delta.vmdk" {
				t.Fatalf("files open for writing: %q, want delta.vmdk only", w)
			}
			readRW(0)(t, d, path)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.setup(t)
			o.Opened()
			opts := Options{ReadOnly: tt.readOnly, Budget: sources.NewBudget(hostileBudget)}
			if tt.named != nil {
				opts.Named = sources.Confine(path)
				tt.named(&opts.Named)
			}
			var d *Disk
			var err error
			alloc := imagetest.Allocated(func() {
				done := make(chan struct{})
				go func() {
					defer close(done)
					d, err = Open(path, opts)
				}()
				select {
				case <-done:
				case <-time.After(20 * time.Second):
					t.Fatal("Open did not return within 20 s")
				}
				if err == nil && tt.check != nil {
					tt.check(t, d, path)
				}
			})
			if d != nil {
				d.Close()
			}
			if used := opts.Budget.Used(); used != 0 {
				t.Errorf("after Close, %d bytes still charged to the budget", used)
			}
			t.Logf("allocated %s, error: %v", bytesize.Words(int64(alloc)), err)
			if alloc > imagetest.AllocBound(int64(hostileBudget)) {
				t.Errorf("Open and reads allocated %s, over the budget of %s", bytesize.Words(int64(alloc)), bytesize.Words(hostileBudget))
			}
			o.Check(t, tt.name)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Open = %v", err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("Open = nil error, want %q", tt.want)
			case !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Open = %v, want %q", err, tt.want)
			case strings.Contains(err.Error(), "\n"):
				t.Fatalf("Open's error is not one line: %q", err)
			}
			if tt.confined {
				var ce *sources.ConfinedError
				if !errors.As(err, &ce) || !errors.Is(err, fs.ErrPermission) {
					t.Fatalf("Open = %v, want a *sources.ConfinedError", err)
				}
			}
		})
	}
}
