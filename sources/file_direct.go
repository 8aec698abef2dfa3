package sources

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Direct I/O.
//
// O_DIRECT needs the file offset, the length and the buffer's address
// aligned (to the logical block size, typically 512 or 4096 bytes). Aligned
// requests go straight to the descriptor; others are bounced through an
// aligned buffer, and writes then read the partial blocks at their edges
// first (read-modify-write). Two bounced writes to different bytes of one
// block would each write back the other's bytes from a stale copy, so a
// write holds a lock (striped by block number) on each block it modifies
// only in part, and so does Zero, which must not be undone that way either.
//
// The window's edges need not be aligned. The part of the window before the
// first and after the last aligned boundary goes through a second, ordinary
// descriptor: bouncing it would read and rewrite bytes outside the window
// (which someone else may be writing) or extend the file past its end. The
// boundaries are page-aligned too, so that no page of the cache holds both
// bytes written through the page cache and bytes written around it.

const (
	dioChunk   = 256 << 10 // bounce buffer size
	dioStripes = 64
)

type directIO struct {
	buffered   *os.File // the file without O_DIRECT, for the window's unaligned edges
	start, end int64    // file offsets served with O_DIRECT
	align      int64    // offset and length alignment, a power of two
	memAlign   uintptr  // buffer address alignment, a power of two dividing align
	pool       sync.Pool
	locks      [dioStripes]sync.Mutex
}

func (f *File) initDirect() error {
	align, memAlign := int64(4096), int64(4096)
	if f.block {
		align, memAlign = f.ssz, f.ssz
	}
	var stx unix.Statx_t
	err := f.control(func(fd int) error {
		return unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx)
	})
	if err == nil && stx.Mask&unix.STATX_DIOALIGN != 0 && stx.Dio_offset_align > 0 {
		align, memAlign = int64(stx.Dio_offset_align), int64(max(stx.Dio_mem_align, 1))
	}
	if !isPow2(align) || !isPow2(memAlign) {
		align, memAlign = 4096, 4096
	}
	align = max(align, memAlign)
	d := &directIO{align: align, memAlign: uintptr(memAlign)}
	d.pool.New = func() any {
		b := alignedBuffer(dioChunk, int(align))
		return &b
	}
	granule := max(align, int64(os.Getpagesize()))
	windowEnd := f.base + f.size
	d.start = min(alignUp(f.base, granule), windowEnd)
	d.end = max(alignDown(windowEnd, granule), d.start)
	f.dio = d
	if d.start > f.base || d.end < windowEnd {
		flag := os.O_RDWR
		if f.ro {
			flag = os.O_RDONLY
		}
		b, err := os.OpenFile(f.name, flag, 0)
		if err != nil {
			return fmt.Errorf("opening a second descriptor for the unaligned edges: %w", err)
		}
		d.buffered = b
	}
	return nil
}

func isPow2(x int64) bool { return x > 0 && x&(x-1) == 0 }

// alignedBuffer returns size bytes whose address is a multiple of align.
func alignedBuffer(size, align int) []byte {
	b := make([]byte, size+align)
	skip := (align - int(uintptr(unsafe.Pointer(&b[0]))&uintptr(align-1))) & (align - 1)
	return b[skip : skip+size : skip+size]
}

// readDirectIO reads len(p) bytes at file offset abs.
func (f *File) readDirectIO(p []byte, abs int64) error {
	d := f.dio
	end := abs + int64(len(p))
	if abs < d.start {
		n := min(end, d.start) - abs
		if _, err := d.buffered.ReadAt(p[:n], abs); err != nil {
			return err
		}
		p, abs = p[n:], abs+n
	}
	if abs < end && abs < d.end {
		n := min(end, d.end) - abs
		if err := f.readAligned(p[:n], abs); err != nil {
			return err
		}
		p, abs = p[n:], abs+n
	}
	if abs < end {
		_, err := d.buffered.ReadAt(p, abs)
		return err
	}
	return nil
}

// writeDirectIO writes p at file offset abs.
func (f *File) writeDirectIO(p []byte, abs int64) error {
	d := f.dio
	end := abs + int64(len(p))
	if abs < d.start {
		n := min(end, d.start) - abs
		if _, err := d.buffered.WriteAt(p[:n], abs); err != nil {
			return err
		}
		p, abs = p[n:], abs+n
	}
	if abs < end && abs < d.end {
		n := min(end, d.end) - abs
		if err := f.writeAligned(p[:n], abs); err != nil {
			return err
		}
		p, abs = p[n:], abs+n
	}
	if abs < end {
		_, err := d.buffered.WriteAt(p, abs)
		return err
	}
	return nil
}

func (d *directIO) aligned(p []byte, abs int64) bool {
	return (abs|int64(len(p)))&(d.align-1) == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))&(d.memAlign-1) == 0
}

// readAligned reads p at abs, inside [d.start, d.end), with O_DIRECT.
func (f *File) readAligned(p []byte, abs int64) error {
	d := f.dio
	if d.aligned(p, abs) {
		_, err := f.f.ReadAt(p, abs)
		return err
	}
	bp := d.pool.Get().(*[]byte)
	defer d.pool.Put(bp)
	end := abs + int64(len(p))
	for abs < end {
		cs := alignDown(abs, d.align)
		ce := min(alignUp(end, d.align), cs+dioChunk)
		b := (*bp)[:ce-cs]
		if _, err := f.f.ReadAt(b, cs); err != nil {
			return err
		}
		n := copy(p, b[abs-cs:])
		p, abs = p[n:], abs+int64(n)
	}
	return nil
}

// writeAligned writes p at abs, inside [d.start, d.end), with O_DIRECT.
func (f *File) writeAligned(p []byte, abs int64) error {
	d := f.dio
	if d.aligned(p, abs) {
		_, err := f.f.WriteAt(p, abs)
		return err
	}
	end := abs + int64(len(p))
	a, b := d.lockEdges(abs, end)
	defer d.unlockEdges(a, b)
	bp := d.pool.Get().(*[]byte)
	defer d.pool.Put(bp)
	for abs < end {
		cs := alignDown(abs, d.align)
		ce := min(alignUp(end, d.align), cs+dioChunk)
		buf := (*bp)[:ce-cs]
		if abs > cs {
			if _, err := f.f.ReadAt(buf[:d.align], cs); err != nil {
				return err
			}
		}
		if end < ce && (ce-d.align > cs || abs == cs) {
			if _, err := f.f.ReadAt(buf[ce-cs-d.align:], ce-d.align); err != nil {
				return err
			}
		}
		n := copy(buf[abs-cs:], p)
		if _, err := f.f.WriteAt(buf, cs); err != nil {
			return err
		}
		p, abs = p[n:], abs+int64(n)
	}
	return nil
}

// lockEdges locks the stripes of the blocks that [abs, end) covers only in
// part, in stripe order, and returns them for unlockEdges (-1: none).
func (d *directIO) lockEdges(abs, end int64) (int, int) {
	a, b := -1, -1
	if abs < d.end && end > d.start {
		abs, end = max(abs, d.start), min(end, d.end)
		if abs&(d.align-1) != 0 {
			a = int((abs / d.align) % dioStripes)
		}
		if end&(d.align-1) != 0 {
			b = int(((end - 1) / d.align) % dioStripes)
		}
	}
	if a > b {
		a, b = b, a
	}
	if a == b {
		a = -1
	}
	if a >= 0 {
		d.locks[a].Lock()
	}
	if b >= 0 {
		d.locks[b].Lock()
	}
	return a, b
}

func (d *directIO) unlockEdges(a, b int) {
	if b >= 0 {
		d.locks[b].Unlock()
	}
	if a >= 0 {
		d.locks[a].Unlock()
	}
}
