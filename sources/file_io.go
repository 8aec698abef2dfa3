package sources

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RAMRegion returns the descriptor and file offset of the n bytes at off
// when the file lives in RAM, so that a server can have the kernel send
// them with sendfile(2) rather than read them into a buffer first; ok is
// false for files on disk (sendfile would wait for the disk) and ranges
// outside the window. The descriptor stays open until Close.
func (f *File) RAMRegion(off, n int64) (fd int, fileOff int64, ok bool) {
	if f.ramFD < 0 || CheckRange(off, n, f.size) != nil {
		return -1, 0, false
	}
	return f.ramFD, f.base + off, true
}

// RAMWriteRegion is RAMRegion for a server that writes the n bytes at off
// into the file itself (through a shared mapping of it), bypassing
// WriteAt: ok is false for a read-only window too. The file counts as
// modified from this call on.
func (f *File) RAMWriteRegion(off, n int64) (fd int, fileOff int64, ok bool) {
	if f.ro {
		return -1, 0, false
	}
	fd, fileOff, ok = f.RAMRegion(off, n)
	if ok {
		f.modified()
	}
	return fd, fileOff, ok
}

// ReadAt reads len(p) bytes at off in the window.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if err := CheckRange(off, int64(len(p)), f.size); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	var err error
	switch {
	case f.ramFD >= 0:
		err = f.rawRAM(unix.SYS_PREAD64, "read", p, f.base+off)
	case f.dio == nil:
		_, err = f.f.ReadAt(p, f.base+off)
	default:
		err = f.readDirectIO(p, f.base+off)
	}
	if err != nil {
		return 0, f.shrunk("read", err, off)
	}
	return len(p), nil
}

// rawRAM reads (SYS_PREAD64) or writes (SYS_PWRITE64) all of p at abs in a
// file that lives in RAM, with raw system calls: they cannot block on a
// device, so they skip the scheduler's syscall bookkeeping, which hands the
// goroutine's P to another thread whenever a call takes longer than
// sysmon's 20 us tick, which under emulation is most calls (figures:
// docs/performance.md, section nbd).
func (f *File) rawRAM(call uintptr, op string, p []byte, abs int64) error {
	for len(p) > 0 {
		n, _, e := unix.RawSyscall6(call, uintptr(f.ramFD), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(abs), 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return &fs.PathError{Op: op, Path: f.name, Err: e}
		case n == 0:
			return io.EOF
		}
		p = p[n:]
		abs += int64(n)
	}
	return nil
}

// shrunk turns the io.EOF met in a file that shrank after open into an EIO
// that says so. Other errors come from os.File and already name the path.
func (f *File) shrunk(op string, err error, off int64) error {
	if errors.Is(err, io.EOF) {
		return &fs.PathError{Op: op, Path: f.name, Err: fmt.Errorf(
			"offset %d: the file ends before the size it had at open: %w: %w", off, io.ErrUnexpectedEOF, syscall.EIO)}
	}
	return err
}

// WriteAt writes p at off in the window.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if f.ro {
		return 0, ErrReadOnly
	}
	if err := CheckRange(off, int64(len(p)), f.size); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Direct I/O reads the edges of unaligned writes first, and may meet
	// the end of a file that shrank.
	err := f.writeAbs(p, f.base+off)
	f.modified()
	if err != nil {
		return 0, f.shrunk("write", err, off)
	}
	return len(p), nil
}

// modified records that the file may hold changes that Flush has not
// synced yet. It is called after the change, so that a Flush that clears
// the flag before its sync covers it.
func (f *File) modified() {
	if !f.unsynced.Load() {
		f.unsynced.Store(true)
	}
}

// writeAbs writes p at file offset abs. os.File.WriteAt already loops on
// short writes.
func (f *File) writeAbs(p []byte, abs int64) error {
	if f.dio != nil {
		return f.writeDirectIO(p, abs)
	}
	if f.ramFD >= 0 {
		return f.rawRAM(unix.SYS_PWRITE64, "write", p, abs)
	}
	_, err := f.f.WriteAt(p, abs)
	return err
}

// Flush makes every WriteAt, Trim and Zero that returned before it was
// called durable, with fdatasync, which also covers writes made through the
// page cache by the direct I/O mode's second descriptor: it syncs the inode.
// It skips the fdatasync when nothing was modified since the last one that
// succeeded. Concurrent Flush calls are serialized.
func (f *File) Flush() error {
	if f.ro {
		return nil
	}
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	if !f.unsynced.Swap(false) {
		return nil
	}
	if err := f.control(f.datasync); err != nil {
		f.unsynced.Store(true)
		return &fs.PathError{Op: "fdatasync", Path: f.name, Err: err}
	}
	return nil
}
