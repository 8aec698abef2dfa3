package sources

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// File serves a regular file or a block device, whole or as a window (the
// --offset and --sizelimit of losetup). It is the Source behind
// `nbdloop attach disk.img` and the bottom of most stacks.
//
// Options (FileOptions): ReadOnly opens the file read-only and refuses every
// modifying call with ErrReadOnly. Offset skips that many bytes at the start
// of the file, and SizeLimit, when not 0, serves at most that many bytes
// after it; neither has to be aligned. DirectIO opens the file with O_DIRECT
// so that its data bypasses the page cache; requests that are not aligned
// to what the filesystem requires are bounced through aligned buffers
// (read-modify-write for writes), and the unaligned head and tail of the
// window, if any, go through the page cache.
//
// Reads and writes are pread and pwrite, Flush is fdatasync. Trim punches a
// hole (fallocate PUNCH_HOLE, BLKDISCARD on block devices) and is advertised
// only where the filesystem or device supports it. Zero uses fallocate
// ZERO_RANGE, or punches a hole when mayTrim allows it (BLKZEROOUT on block
// devices), and writes zeros where the filesystem supports neither. Caps:
// Parallel always; Flush, Zero, and Trim where supported, unless read-only;
// Rotational from the sysfs queue of the device underneath.
//
// Limits: the size is taken once at open (st_size, or BLKGETSIZE64 for a
// block device); if the file shrinks later, reads past its new end fail with
// EIO. What a discarded range of a block device reads back as is up to the
// device (most return zeros). Size is exact: checking that it is a multiple of the block size is
// the attach layer's job. An empty file or window is an error (ErrEmpty).
// DirectIO fails with ErrDirectIO where the filesystem refuses O_DIRECT
// (tmpfs on older kernels, some FUSE filesystems); retry without it.
//
// Example, the second 1 GiB of a disk image, read-only:
//
//	f, err := sources.OpenFile("disk.img", sources.FileOptions{
//		ReadOnly: true, Offset: 1 << 30, SizeLimit: 1 << 30,
//	})
type File struct {
	name  string
	f     *os.File
	rc    syscall.RawConn // for the syscalls os.File lacks; holds f's fd open while in use
	base  int64           // file offset of the window's first byte
	size  int64
	caps  Caps
	ro    bool
	block bool  // a block device rather than a regular file
	ssz   int64 // a block device's logical block size, which discard and zeroout need alignment to
	dio   *directIO
	// ramFD is f's descriptor when the file lives in RAM (Caps.InMemory)
	// and reads use raw system calls; -1 otherwise. Close comes after every
	// other call, so the number stays valid while they run.
	ramFD int

	// Set once the filesystem answers EOPNOTSUPP, so that later calls go
	// straight to the fallback instead of asking again.
	noPunch     atomic.Bool
	noZeroRange atomic.Bool

	closed atomic.Bool
}

// FileOptions are the options of OpenFile. The zero value opens the whole
// file read-write through the page cache.
type FileOptions struct {
	// ReadOnly opens the file read-only; the Source then refuses every
	// modifying call with ErrReadOnly.
	ReadOnly bool
	// Offset is where the served window starts in the file, in bytes.
	Offset int64
	// SizeLimit is the largest size of the window in bytes; 0 means up to
	// the end of the file. A limit past the end is cut to the end, as
	// losetup does.
	SizeLimit int64
	// DirectIO opens the file with O_DIRECT, bypassing the page cache.
	DirectIO bool
}

// ErrEmpty is returned when a Source would serve no bytes at all: an empty
// file, a window that starts at or past the end, a size or length of 0.
var ErrEmpty = errors.New("sources: source is empty")

// ErrDirectIO is returned (inside an *fs.PathError) by OpenFile with
// FileOptions.DirectIO when the filesystem refuses O_DIRECT; callers may
// open the file again without it.
var ErrDirectIO = errors.New("sources: the filesystem does not support direct I/O (O_DIRECT)")

// OpenFile opens path, a regular file or a block device, as a Source.
// Errors are *fs.PathError, naming path once.
func OpenFile(path string, opts FileOptions) (*File, error) {
	if opts.Offset < 0 {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("negative offset %d: %w", opts.Offset, syscall.EINVAL)}
	}
	if opts.SizeLimit < 0 {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("negative size limit %d: %w", opts.SizeLimit, syscall.EINVAL)}
	}
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	osf, err := openFile(path, flag, opts.DirectIO)
	if err != nil {
		return nil, err
	}
	f := &File{name: path, f: osf, ro: opts.ReadOnly, base: opts.Offset}
	if err := f.init(opts); err != nil {
		osf.Close()
		if f.dio != nil && f.dio.buffered != nil {
			f.dio.buffered.Close()
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return f, nil
}

// NewFile serves osf, a file that is already open (a memfd handed down by
// a supervisor, say), as OpenFile would serve the file at a path; name
// stands for the path in errors. The File owns osf from then on, and closes
// it on error too. DirectIO is not available here: it is decided at open.
func NewFile(osf *os.File, name string, opts FileOptions) (*File, error) {
	if opts.Offset < 0 || opts.SizeLimit < 0 || opts.DirectIO {
		osf.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("negative offset or size limit, or direct I/O on an open file: %w", syscall.EINVAL)}
	}
	f := &File{name: name, f: osf, ro: opts.ReadOnly, base: opts.Offset}
	if err := f.init(opts); err != nil {
		osf.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return f, nil
}

// openFile opens path, with O_DIRECT if direct is set, and tells a refusal
// of O_DIRECT apart from other errors.
func openFile(path string, flag int, direct bool) (*os.File, error) {
	if !direct {
		return os.OpenFile(path, flag, 0)
	}
	f, err := os.OpenFile(path, flag|syscall.O_DIRECT, 0)
	if err == nil || !errors.Is(err, syscall.EINVAL) {
		return f, err
	}
	// Filesystems without O_DIRECT fail open with EINVAL; make sure that is
	// what happened before saying so.
	plain, perr := os.OpenFile(path, flag, 0)
	if perr != nil {
		return nil, perr
	}
	plain.Close()
	return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w: %w", ErrDirectIO, syscall.EINVAL)}
}

// init measures the file, computes the window and the capabilities, and
// prepares direct I/O. Its errors lack the path, which OpenFile adds.
func (f *File) init(opts FileOptions) error {
	rc, err := f.f.SyscallConn()
	if err != nil {
		return err
	}
	f.rc = rc
	var st unix.Stat_t
	if err := f.control(func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	var fileSize int64
	var dev uint64 // the device whose sysfs queue describes the storage
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		fileSize = st.Size
		dev = st.Dev
	case unix.S_IFBLK:
		f.block = true
		dev = st.Rdev
		var size uint64
		var ssz int
		err := f.control(func(fd int) (err error) {
			if size, err = unix.IoctlGetUint64(fd, unix.BLKGETSIZE64); err != nil {
				return fmt.Errorf("ioctl BLKGETSIZE64: %w", err)
			}
			if ssz, err = unix.IoctlGetInt(fd, unix.BLKSSZGET); err != nil {
				return fmt.Errorf("ioctl BLKSSZGET: %w", err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		fileSize, f.ssz = int64(size), int64(ssz)
		if f.ssz <= 0 {
			f.ssz = 512
		}
	default:
		return fmt.Errorf("not a regular file or block device: %w", syscall.EINVAL)
	}

	switch {
	case fileSize == 0:
		return ErrEmpty
	case opts.Offset >= fileSize:
		return fmt.Errorf("offset %d is at or past the end of the file (%d bytes): %w", opts.Offset, fileSize, ErrEmpty)
	}
	f.size = fileSize - opts.Offset
	if opts.SizeLimit > 0 && opts.SizeLimit < f.size {
		f.size = opts.SizeLimit
	}

	f.caps = Caps{
		ReadOnly:   f.ro,
		Flush:      !f.ro,
		Zero:       !f.ro,
		Parallel:   true,
		Rotational: queueAttr(dev, "rotational") == "1",
		InMemory:   !f.block && f.inRAM(),
	}
	if !f.ro {
		if f.block {
			maxDiscard, _ := strconv.ParseUint(queueAttr(dev, "discard_max_bytes"), 10, 64)
			f.caps.Trim = maxDiscard > 0
		} else {
			f.caps.Trim = f.probePunch(fileSize)
		}
	}
	f.ramFD = -1
	if opts.DirectIO {
		return f.initDirect()
	}
	if f.caps.InMemory {
		err := f.control(func(fd int) error { f.ramFD = fd; return nil })
		if err != nil {
			return err
		}
	}
	return nil
}

// inRAM reports whether the file lives on a RAM file system (tmpfs, which
// also holds memfds, ramfs or hugetlbfs), where reads and writes are memory
// copies that never wait for a device.
func (f *File) inRAM() bool {
	var st unix.Statfs_t
	if f.control(func(fd int) error { return unix.Fstatfs(fd, &st) }) != nil {
		return false
	}
	switch st.Type {
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC, unix.HUGETLBFS_MAGIC:
		return true
	}
	return false
}

// probePunch reports whether the filesystem can punch holes, by punching
// one past the end of the file, where there is no data to lose.
func (f *File) probePunch(fileSize int64) bool {
	err := f.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, fileSize, 1)
	return err == nil
}

// queueAttr returns an attribute of the block queue of device dev, such as
// "rotational", or "" when there is none (no sysfs, or a device without a
// queue such as a btrfs subvolume's anonymous device).
func queueAttr(dev uint64, name string) string {
	dir := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
	// A partition's directory has no queue of its own; its disk's is
	// the parent directory.
	for _, p := range []string{filepath.Join(dir, "queue", name), filepath.Join(dir, "..", "queue", name)} {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// Name returns the path the File was opened with.
func (f *File) Name() string { return f.name }

// Size returns the size of the window, in bytes.
func (f *File) Size() int64 { return f.size }

// Caps returns the capabilities computed at open.
func (f *File) Caps() Caps { return f.caps }

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
	if err := f.writeAbs(p, f.base+off); err != nil {
		return 0, f.shrunk("write", err, off)
	}
	return len(p), nil
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

// Flush calls fdatasync, which also covers writes made through the page
// cache by the direct I/O mode's second descriptor: it syncs the inode.
func (f *File) Flush() error {
	if f.ro {
		return nil
	}
	if err := f.control(unix.Fdatasync); err != nil {
		return &fs.PathError{Op: "fdatasync", Path: f.name, Err: err}
	}
	return nil
}

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

// Close flushes a writable file and closes it. A second Close returns an
// error wrapping fs.ErrClosed.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	err := f.Flush()
	if f.dio != nil && f.dio.buffered != nil {
		if cerr := f.dio.buffered.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// control runs fn with the file's descriptor, which stays open meanwhile.
func (f *File) control(fn func(fd int) error) error {
	var err error
	if cerr := f.rc.Control(func(fd uintptr) { err = fn(int(fd)) }); cerr != nil {
		return cerr
	}
	return err
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
