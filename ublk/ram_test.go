package ublk

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// newRAMFile is a memory: disk as attach makes it: a memfd of size bytes
// served by sources.File from byte offset on.
func newRAMFile(t testing.TB, size, offset int64) *sources.File {
	t.Helper()
	fd, err := unix.MemfdCreate("ublk-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, offset+size); err != nil {
		t.Fatal(err)
	}
	f, err := sources.NewFile(os.NewFile(uintptr(fd), "memfd"), "memory", sources.FileOptions{Offset: offset})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, _, ok := f.RAMRegion(0, size); !ok {
		t.Fatal("a memfd is not a RAM file for sources.File")
	}
	return f
}

// readsOnly passes on RAMRegion and not RAMWriteRegion, as attach's probe
// guard does: writes go through the tag's buffer and WriteAt.
type readsOnly struct{ *sources.File }

func (r readsOnly) RAMWriteRegion() {} // hides the File's

// charStandIn is a file standing in for /dev/ublkcN: the requests' data at
// their userCopyPos, which pread and pwrite reach the same way.
func charStandIn(t testing.TB) int {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "ublkc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// TestServeUserCopy writes through the kernel's side of user copy (the
// stand-in at the tag's position), reads back into it, and checks the
// Source's bytes, for sources in RAM files (mapped, both ways or reads
// only), read-only, and a memory source without a file (tag buffers).
func TestServeUserCopy(t *testing.T) {
	pattern := bytes.Repeat([]byte("copy"), 1024)
	for _, c := range []struct {
		name     string
		src      func(t *testing.T) sources.Source
		readOnly bool
		mapped   bool // reads come from the mapping
	}{
		{"memfd", func(t *testing.T) sources.Source { return newRAMFile(t, 1<<20, 0) }, false, true},
		{"memfd at an unaligned offset", func(t *testing.T) sources.Source { return newRAMFile(t, 1<<20, 512) }, false, true},
		{"reads only", func(t *testing.T) sources.Source { return readsOnly{newRAMFile(t, 1<<20, 0)} }, false, true},
		{"read-only", func(t *testing.T) sources.Source { return newRAMFile(t, 1<<20, 0) }, true, true},
		{"memory source", func(t *testing.T) sources.Source { return newMemory(t, 1<<20) }, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := c.src(t)
			h := newHandler(src, c.readOnly)
			h.ram = newRAMMap(src, c.readOnly)
			defer h.ram.close()
			if (h.ram != nil) != c.mapped {
				t.Fatalf("mapped: %v, want %v", h.ram != nil, c.mapped)
			}
			ch, buf := charStandIn(t), make([]byte, 64<<10)
			pos := userCopyPos(1, 5, 0)
			if _, err := unix.Pwrite(ch, pattern, pos); err != nil {
				t.Fatal(err)
			}
			w := ioDesc{opFlags: opWrite, nrSectors: 8, startSector: 16}
			want := int32(4096)
			if c.readOnly {
				want = -int32(syscall.EROFS)
			}
			if got := h.serveUserCopy(&w, buf, ch, pos); got != want {
				t.Fatalf("write: result %d, want %d", got, want)
			}
			if c.readOnly {
				return
			}
			got := make([]byte, 4096)
			if _, err := src.ReadAt(got, 16<<9); err != nil || !bytes.Equal(got, pattern) {
				t.Fatalf("the source holds other bytes after the write (%v)", err)
			}
			rpos := userCopyPos(0, 7, 0)
			r := ioDesc{opFlags: opRead, nrSectors: 8, startSector: 16}
			if res := h.serveUserCopy(&r, buf, ch, rpos); res != 4096 {
				t.Fatalf("read: result %d, want 4096", res)
			}
			if _, err := unix.Pread(ch, got, rpos); err != nil || !bytes.Equal(got, pattern) {
				t.Fatalf("the read left other bytes in the request (%v)", err)
			}
			out := ioDesc{opFlags: opRead, nrSectors: 8, startSector: 2047}
			if res := h.serveUserCopy(&out, buf, ch, rpos); res != -int32(syscall.EIO) {
				t.Fatalf("read past the end: result %d, want EIO", res)
			}
		})
	}
}

// TestServeUserCopyAllocs checks that user copy reads and writes allocate
// nothing.
func TestServeUserCopyAllocs(t *testing.T) {
	src := newRAMFile(t, 1<<20, 0)
	h := newHandler(src, false)
	h.ram = newRAMMap(src, false)
	defer h.ram.close()
	ch, buf := charStandIn(t), make([]byte, 4096)
	pos := userCopyPos(0, 3, 0)
	w := ioDesc{opFlags: opWrite, nrSectors: 8, startSector: 64}
	r := ioDesc{opFlags: opRead, nrSectors: 8, startSector: 64}
	unix.Pwrite(ch, buf, pos)
	if a := testing.AllocsPerRun(1000, func() { h.serveUserCopy(&w, buf, ch, pos); h.serveUserCopy(&r, buf, ch, pos) }); a != 0 {
		t.Fatalf("%v allocations per write and read, want 0", a)
	}
}

// BenchmarkServeUserCopy4K serves 4 KiB writes and reads of a memfd
// through user copy (against a stand-in file); -benchmem shows 0
// allocs/op.
func BenchmarkServeUserCopy4K(b *testing.B) {
	src := newRAMFile(b, 64<<20, 0)
	h := newHandler(src, false)
	h.ram = newRAMMap(src, false)
	defer h.ram.close()
	ch, buf := charStandIn(b), make([]byte, 4096)
	pos := userCopyPos(0, 3, 0)
	unix.Pwrite(ch, buf, pos)
	descs := []ioDesc{{opFlags: opWrite, nrSectors: 8}, {opFlags: opRead, nrSectors: 8}}
	b.ReportAllocs()
	b.SetBytes(4096)
	for i := 0; b.Loop(); i++ {
		d := descs[i&1]
		d.startSector = uint64(i*8) % (64 << 11)
		h.serveUserCopy(&d, buf, ch, pos)
	}
}

// TestServeUserCopyHoles checks that reading a sparse memfd through user
// copy allocates none of its holes outside the chunks holding data (a
// read fault on a shared mapping would), and that data found when mapping
// and data written since are read back.
func TestServeUserCopyHoles(t *testing.T) {
	const size = 8 << 20
	src := newRAMFile(t, size, 0)
	pattern := bytes.Repeat([]byte("hole"), 1024)
	if _, err := src.WriteAt(pattern, 5<<20); err != nil { // data before the mapping
		t.Fatal(err)
	}
	h := newHandler(src, false)
	h.ram = newRAMMap(src, false)
	defer h.ram.close()
	fd, _, _ := src.RAMRegion(0, size)
	blocks := func() int64 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks
	}
	before := blocks()
	ch, buf := charStandIn(t), make([]byte, 1<<20)
	pos := userCopyPos(0, 1, 0)
	got := make([]byte, 1<<20)
	for _, c := range []struct {
		sector uint64
		want   []byte // the first bytes read
	}{
		{0, make([]byte, 4096)}, {2 << 11, make([]byte, 4096)}, {(5 << 11) - 8, make([]byte, 4096)},
	} {
		r := ioDesc{opFlags: opRead, nrSectors: 2048, startSector: c.sector}
		if res := h.serveUserCopy(&r, buf, ch, pos); res != 1<<20 {
			t.Fatalf("read of sector %d: result %d", c.sector, res)
		}
		if _, err := unix.Pread(ch, got, pos); err != nil || !bytes.Equal(got[:len(c.want)], c.want) {
			t.Fatalf("read of sector %d: other bytes (%v)", c.sector, err)
		}
	}
	if after := blocks(); after != before {
		t.Fatalf("reading holes allocated %d blocks of the memfd", after-before)
	}
	r := ioDesc{opFlags: opRead, nrSectors: 8, startSector: 5 << 11}
	if res := h.serveUserCopy(&r, buf, ch, pos); res != 4096 {
		t.Fatalf("read of the data: result %d", res)
	}
	if _, err := unix.Pread(ch, got[:4096], pos); err != nil || !bytes.Equal(got[:4096], pattern) {
		t.Fatalf("read of the data: other bytes (%v)", err)
	}
	if _, err := unix.Pwrite(ch, pattern, pos); err != nil {
		t.Fatal(err)
	}
	w := ioDesc{opFlags: opWrite, nrSectors: 8, startSector: 7 << 11}
	if res := h.serveUserCopy(&w, buf, ch, pos); res != 4096 {
		t.Fatalf("write: result %d", res)
	}
	if !h.ram.marked(7<<20, 4096) || h.ram.marked(1<<20, 4096) || !h.ram.marked(5<<20, 4096) {
		t.Fatal("the chunks holding data are not those marked")
	}
}
