package sources

import "golang.org/x/sys/unix"

// maxWriteMap is the largest file mapSealed maps: larger RAM disks, which
// are mostly holes, keep writing with pwrite(2) rather than take that much
// of the address space.
const maxWriteMap = 1 << 40

// mapSealed returns a shared, writable mapping of the size bytes of fd, or
// nil when the file can shrink (no F_SEAL_SHRINK: a page of the mapping
// could vanish, and touching it raise SIGBUS), is larger than maxWriteMap,
// or cannot be mapped.
func mapSealed(fd int, size int64) []byte {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_SHRINK == 0 || size > maxWriteMap {
		return nil
	}
	m, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	return m
}

// MappedRange returns the n bytes at off in the window as a slice of the
// File's shared mapping (a memory: device's sealed memfd), for a server
// to send a READ reply from without reading the bytes into a buffer
// first. ok is false when the File has no mapping, when the range is
// outside the window, and when any of it may be a hole: reading a hole
// through the mapping would fill it with a page of zeros. A range is
// known to be data when the last run of data found covers it (by Extents,
// by the writes that extended it, or by an earlier MappedRange); when it
// does not, MappedRange asks the filesystem (SEEK_DATA, SEEK_HOLE) only
// if seek is set, and otherwise returns ok false.
//
// The slice stays valid until Close. Writes that race with its use show
// in it. A Trim that races with its use, or with a write, may leave a page
// of zeros where the hole was: memory, never wrong bytes.
func (f *File) MappedRange(off, n int64, seek bool) (b []byte, ok bool) {
	if f.wmap == nil || n <= 0 || CheckRange(off, n, f.size) != nil {
		return nil, false
	}
	if !f.knownData(off, n) && (!seek || !f.seekData(off, n)) {
		return nil, false
	}
	abs := f.base + off
	return f.wmap[abs : abs+n], true
}

// seekData reports whether the n bytes at off in the window are all data,
// from SEEK_DATA and SEEK_HOLE, and makes the run of data found the one
// the File knows.
func (f *File) seekData(off, n int64) bool {
	pos := f.base + off
	if data, err := f.seek(pos, unix.SEEK_DATA); err != nil || data != pos {
		return false
	}
	hole, err := f.seek(pos, unix.SEEK_HOLE)
	if err != nil || hole < pos+n {
		return false
	}
	f.knowData(off, min(hole-f.base, f.size))
	return true
}

// wrote extends the run of data the File knows by the n bytes at off just
// written (or about to be), when they start inside it or at its end, as
// a sequential write does; the write made them data. Only mapped Files
// keep it so, for MappedRange. The compare-and-swap leaves a run that a
// Trim or Zero emptied meanwhile empty.
func (f *File) wrote(off, n int64) {
	if f.wmap == nil {
		return
	}
	hi := f.dataHi.Load()
	if off >= f.dataLo.Load() && off <= hi && off+n > hi {
		f.dataHi.CompareAndSwap(hi, off+n)
	}
}
