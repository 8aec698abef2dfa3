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
// outside the window, and when any of it is a hole: reading a hole
// through the mapping would fill it with a page of zeros. The slice stays
// valid until Close. Writes that race with its use show in it, and a Trim
// that races with it may leave a page of zeros where the hole was.
func (f *File) MappedRange(off, n int64) (b []byte, ok bool) {
	if f.wmap == nil || n <= 0 || CheckRange(off, n, f.size) != nil || !f.allData(off, n) {
		return nil, false
	}
	abs := f.base + off
	return f.wmap[abs : abs+n], true
}

// allData reports whether the n bytes at off in the window are all data,
// from the last run of data Extents found when it covers them (as it
// does after the server's Extents for the same READ), else from
// SEEK_DATA and SEEK_HOLE.
func (f *File) allData(off, n int64) bool {
	if off >= f.dataLo.Load() && off+n <= f.dataHi.Load() {
		return true
	}
	pos := f.base + off
	if data, err := f.seek(pos, unix.SEEK_DATA); err != nil || data != pos {
		return false
	}
	hole, err := f.seek(pos, unix.SEEK_HOLE)
	if err != nil || hole < pos+n {
		return false
	}
	f.dataHi.Store(0)
	f.dataLo.Store(off)
	f.dataHi.Store(min(hole-f.base, f.size))
	return true
}
