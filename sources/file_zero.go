package sources

import (
	"errors"
	"io/fs"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Trim punches a hole in the range, or does nothing where that is not
// supported. On a block device, only the part aligned to the logical block
// size is discarded.
func (f *File) Trim(off, length int64) error {
	if f.ro {
		return ErrReadOnly
	}
	if err := CheckRange(off, length, f.size); err != nil {
		return err
	}
	if length == 0 || !f.caps.Trim || f.noPunch.Load() {
		return nil
	}
	defer f.modified()
	defer f.dataHi.Store(0) // the hole shows in Extents
	abs := f.base + off
	if f.block {
		start, end := alignUp(abs, f.ssz), alignDown(abs+length, f.ssz)
		if start >= end {
			return nil
		}
		err := f.control(func(fd int) error { return ioctlRange(fd, unix.BLKDISCARD, start, end-start) })
		if errors.Is(err, syscall.EOPNOTSUPP) {
			f.noPunch.Store(true)
			return nil
		}
		if err != nil {
			return &fs.PathError{Op: "ioctl BLKDISCARD", Path: f.name, Err: err}
		}
		return nil
	}
	err := f.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, abs, length)
	if unsupported(err) {
		f.noPunch.Store(true)
		return nil
	}
	if err != nil {
		return &fs.PathError{Op: "fallocate", Path: f.name, Err: err}
	}
	return nil
}

// Zero makes the range read as zeros: punching a hole when mayTrim allows
// it, else with fallocate ZERO_RANGE (BLKZEROOUT on block devices), else by
// writing zeros.
func (f *File) Zero(off, length int64, mayTrim bool) error {
	if f.ro {
		return ErrReadOnly
	}
	if err := CheckRange(off, length, f.size); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	defer f.modified()
	defer f.dataHi.Store(0) // a hole punched shows in Extents
	abs := f.base + off
	if f.block {
		return f.zeroBlock(abs, length, mayTrim)
	}
	done, err := f.zeroFallocate(abs, length, mayTrim)
	if done || err != nil {
		return err
	}
	return f.writeZeros(abs, length)
}

// zeroFallocate zeros a range of a regular file with fallocate, punching a
// hole if mayTrim allows it. It returns false, nil when the filesystem
// supports neither way.
func (f *File) zeroFallocate(abs, length int64, mayTrim bool) (bool, error) {
	// In direct I/O mode a bounced write to another part of an edge block
	// must not write back the bytes zeroed here from its stale copy.
	if f.dio != nil {
		a, b := f.dio.lockEdges(abs, abs+length)
		defer f.dio.unlockEdges(a, b)
	}
	if mayTrim && f.caps.Trim && !f.noPunch.Load() {
		err := f.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, abs, length)
		if err == nil {
			return true, nil
		}
		if !unsupported(err) {
			return false, &fs.PathError{Op: "fallocate", Path: f.name, Err: err}
		}
		f.noPunch.Store(true)
	}
	if !f.noZeroRange.Load() {
		err := f.fallocate(unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, abs, length)
		if err == nil {
			return true, nil
		}
		if !unsupported(err) {
			return false, &fs.PathError{Op: "fallocate", Path: f.name, Err: err}
		}
		f.noZeroRange.Store(true)
	}
	return false, nil
}

// zeroBlock zeros a range of a block device. The device takes only whole
// logical blocks; the unaligned edges are written with zeros.
func (f *File) zeroBlock(abs, length int64, mayTrim bool) error {
	end := abs + length
	start, stop := alignUp(abs, f.ssz), alignDown(end, f.ssz)
	if start >= stop {
		return f.writeZeros(abs, length)
	}
	if start > abs {
		if err := f.writeZeros(abs, start-abs); err != nil {
			return err
		}
	}
	if stop < end {
		if err := f.writeZeros(stop, end-stop); err != nil {
			return err
		}
	}
	if f.dio != nil {
		// As in zeroFallocate; needed only when the direct I/O alignment
		// is coarser than the logical block size.
		a, b := f.dio.lockEdges(start, stop)
		defer f.dio.unlockEdges(a, b)
	}
	if mayTrim && f.caps.Trim && !f.noPunch.Load() {
		// On a block device, punching a hole is a write-zeroes request that
		// may unmap, failing rather than falling back to writing zeros.
		err := f.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, start, stop-start)
		if err == nil {
			return nil
		}
		if !unsupported(err) {
			return &fs.PathError{Op: "fallocate", Path: f.name, Err: err}
		}
		f.noPunch.Store(true)
	}
	// BLKZEROOUT falls back to writing zeros inside the kernel.
	err := f.control(func(fd int) error { return ioctlRange(fd, unix.BLKZEROOUT, start, stop-start) })
	if err != nil {
		return &fs.PathError{Op: "ioctl BLKZEROOUT", Path: f.name, Err: err}
	}
	return nil
}

// writeZeros writes zeros to [abs, abs+length) from the shared zero buffer.
func (f *File) writeZeros(abs, length int64) error {
	for length > 0 {
		n := min(length, int64(len(zeros)))
		if err := f.writeAbs(zeros[:n], abs); err != nil {
			return err
		}
		abs += n
		length -= n
	}
	return nil
}

// fallocate calls fallocate(2), retrying when a signal interrupts it.
func (f *File) fallocate(mode uint32, off, length int64) error {
	return f.control(func(fd int) error {
		for {
			err := unix.Fallocate(fd, mode, off, length)
			if err != unix.EINTR {
				return err
			}
		}
	})
}

// ioctlRange issues a block device ioctl that takes a {start, length} pair
// of uint64, such as BLKDISCARD or BLKZEROOUT.
func ioctlRange(fd int, req uint, off, length int64) error {
	r := [2]uint64{uint64(off), uint64(length)}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&r)))
	if e != 0 {
		return e
	}
	return nil
}

// unsupported reports whether err says the filesystem lacks the operation.
func unsupported(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS)
}

func alignDown(x, a int64) int64 { return x &^ (a - 1) }
func alignUp(x, a int64) int64   { return (x + a - 1) &^ (a - 1) }
