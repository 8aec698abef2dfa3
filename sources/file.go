package sources

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/freelist"
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
// Reads and writes are pread and pwrite, Flush is fdatasync (skipped when
// nothing was modified since the last one). Trim punches a hole (fallocate
// PUNCH_HOLE, BLKDISCARD on block devices) and is advertised only where the
// filesystem or device supports it. Zero uses fallocate
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

	// dataLo and dataHi are a range of the window that Extents found to be
	// data (empty at first): Extents of a range inside it asks the
	// filesystem nothing. Data is a safe answer over any range (it may
	// read as anything, zeros included), so writes need not update it and
	// a torn pair does no harm; Trim and Zero empty it so that the holes
	// they punch show again.
	dataLo, dataHi atomic.Int64
	seeks          freelist.List[seekCall] // for Extents

	// unsynced is set after every call that may have modified the file
	// (WriteAt, Trim, Zero; failed ones too) and cleared by Flush just
	// before its fdatasync, so that Flush and Close sync only when there is
	// something to sync. syncMu serializes Flush: one that finds the flag
	// clear returns only after the sync that cleared it has finished.
	unsynced atomic.Bool
	syncMu   sync.Mutex
	datasync func(fd int) error // unix.Fdatasync; tests count the calls

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
	f.datasync = unix.Fdatasync
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

// Close flushes a writable file (which syncs only if something was
// modified since the last Flush) and closes it. A second Close returns an
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
