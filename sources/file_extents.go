package sources

import (
	"errors"
	"io/fs"

	"golang.org/x/sys/unix"
)

// Extents reports the window's holes and data as the filesystem keeps
// them (lseek SEEK_DATA and SEEK_HOLE): holes are ExtentHole, the rest
// ExtentData. A block device, and a filesystem that cannot tell, is all
// data. Zeroed ranges that the filesystem keeps allocated (fallocate
// ZERO_RANGE) count as data on most filesystems. A range inside the last
// run of data found is data without asking the filesystem again (the
// server asks on every READ of a client that takes holes in its replies).
func (f *File) Extents(off, length int64, fn func(Extent) bool) error {
	if err := CheckRange(off, length, f.size); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if f.block || off >= f.dataLo.Load() && off+length <= f.dataHi.Load() {
		fn(Extent{Off: off, Length: length, Kind: ExtentData})
		return nil
	}
	pos, end := f.base+off, f.base+off+length
	emit := func(to int64, kind ExtentKind) bool {
		to = min(to, end)
		ok := fn(Extent{Off: pos - f.base, Length: to - pos, Kind: kind})
		pos = to
		return ok
	}
	for pos < end {
		data, err := f.seek(pos, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			// No data from pos to the end of the file.
			emit(end, ExtentHole)
			return nil
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
			emit(end, ExtentData)
			return nil
		case err != nil:
			return err
		case data > pos:
			if !emit(data, ExtentHole) {
				return nil
			}
			continue
		}
		hole, err := f.seek(pos, unix.SEEK_HOLE)
		switch {
		case errors.Is(err, unix.ENXIO):
			// The file shrank since the SEEK_DATA: its end is a hole.
			hole = end
		case err != nil:
			return err
		case hole <= pos:
			hole = end // a filesystem that answers nonsense: data
		}
		f.dataHi.Store(0)
		f.dataLo.Store(pos - f.base)
		f.dataHi.Store(min(hole-f.base, f.size))
		if !emit(hole, ExtentData) {
			return nil
		}
	}
	return nil
}

// seek returns lseek(fd, off, whence). The file's offset moves, which no
// other call uses: reads and writes are pread and pwrite.
func (f *File) seek(off int64, whence int) (int64, error) {
	c := f.seeks.Get()
	if c == nil {
		c = &seekCall{}
		c.run = c.seek
	}
	c.off, c.whence = off, whence
	cerr := f.rc.Control(c.run)
	at, err := c.at, c.err
	f.seeks.Put(c)
	if cerr != nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: err}
	}
	return at, err
}

// seekCall is one lseek, made through the file's syscall.RawConn by its
// run method value, bound once, so that seeking allocates nothing.
type seekCall struct {
	off    int64
	whence int
	at     int64
	err    error
	run    func(fd uintptr)
}

func (c *seekCall) seek(fd uintptr) {
	c.at, c.err = unix.Seek(int(fd), c.off, c.whence)
}
