// Package sources defines Source, the contract between nbdloop's NBD server
// and whatever stores a block device's bytes, and the basic backends: raw
// files and block devices (File), sparse RAM disks (Memory) and byte windows
// over another source (Window).
//
// The compressed formats in subpackages (xz, gzip, zstd) open from an
// io.ReaderAt plus a size, never from a path, so they compose: an xz image
// inside a partition of a file is just three Sources stacked; partitioned
// builds on Sources too. The disk image formats qcow2 and vmdk open the
// path the user named, because their images name further files (backing
// files, extents, parents) relative to it; those named files are opened
// through NamedFiles, which confines them; qcow2 also opens read-only from
// a Source, its backing files found through a resolver of its own (for
// URLs, httpsrc.Named). script opens the program at a
// path and serves what it prints. httpsrc serves an object on a web server,
// read with range requests, as a Source the compressed formats open from.
package sources

import (
	"fmt"
	"io"
	"syscall"
)

// Source is a block device's backing store: a fixed-size array of bytes that
// can be read and, unless it is read-only, written, trimmed and zeroed.
//
// The NBD server range-checks every request once, before it reaches the
// Source, so a Source may assume 0 <= off, 0 <= len and off+len <= Size() for
// every call that comes through the server. Sources must still return an
// error (never panic) for out-of-range calls made directly.
//
// ReadAt and WriteAt follow io.ReaderAt and io.WriterAt: an in-range ReadAt
// fills p completely and returns len(p), nil, or returns n < len(p) together
// with a non-nil error; WriteAt likewise either writes all of p or returns an
// error. A zero-length call succeeds and does nothing. Implementations must
// not retain p after the call returns.
//
// Errors should carry a syscall.Errno where one applies (EIO, ENOSPC, EPERM,
// EROFS, ...), wrapped with %w, because the NBD server turns the errno found
// by errors.As into the NBD error sent to the kernel (anything else is EIO).
// A read-only Source returns ErrReadOnly (which wraps EPERM) from every
// modifying method.
//
// Concurrency: when Caps().Parallel is true, every method except Close may be
// called from many goroutines at once, on overlapping ranges too; otherwise
// the server serializes all calls. Close is called once, after every other
// call has returned, and a second Close must return nil or an error, never
// panic.
type Source interface {
	io.ReaderAt
	io.WriterAt

	// Size is the number of bytes the Source serves. It does not change
	// while the Source is open.
	Size() int64

	// Caps reports what the Source can do. It is computed once at open and
	// must return the same value on every call.
	Caps() Caps

	// Flush makes every write that completed before the call durable
	// (fdatasync for files). Sources without a volatile cache return nil.
	Flush() error

	// Trim tells the Source that the range's contents are no longer needed.
	// Afterwards the range reads back as zeros or as its old contents:
	// callers must not rely on either. Sources that cannot trim return nil.
	Trim(off, length int64) error

	// Zero makes the range read back as zeros. With mayTrim, the Source may
	// deallocate the range (punch a hole); without it, the storage must stay
	// allocated (NBD_CMD_FLAG_NO_HOLE).
	Zero(off, length int64, mayTrim bool) error

	// Close releases the Source's resources, flushing first where that
	// matters.
	Close() error
}

// Caps describes what a Source can do. Filters compute their own from the
// Source they wrap, explicitly, one field at a time.
type Caps struct {
	// ReadOnly sources refuse every modifying call with ErrReadOnly.
	ReadOnly bool
	// Flush is true when the Source has a volatile write cache, so the
	// kernel should send flushes (and FUA, which the server implements as a
	// write followed by Flush).
	Flush bool
	// Trim is true when Trim actually frees storage.
	Trim bool
	// Zero is true when Zero is cheaper than writing zeros.
	Zero bool
	// Parallel is true when every method may be called concurrently.
	Parallel bool
	// Rotational hints that the storage is a spinning disk.
	Rotational bool
	// InMemory is true when the bytes live in RAM (a memfd, tmpfs, the Go
	// heap) and no call ever waits for a device or a network: the server
	// then serves requests on the connection's reader goroutine, in
	// batches, instead of handing each to a worker goroutine (a wake-up
	// and a thread switch per request, which cost more than a memory copy).
	// Filters leave it false unless they never block either.
	InMemory bool
}

// String lists the capabilities that are set, for logs and `list --json`.
func (c Caps) String() string {
	s := ""
	add := func(on bool, name string) {
		if on {
			if s != "" {
				s += ","
			}
			s += name
		}
	}
	add(c.ReadOnly, "ro")
	add(c.Flush, "flush")
	add(c.Trim, "trim")
	add(c.Zero, "zero")
	add(c.Parallel, "parallel")
	add(c.Rotational, "rotational")
	add(c.InMemory, "inmemory")
	return s
}

// ErrReadOnly is returned by every modifying call on a read-only Source.
var ErrReadOnly = fmt.Errorf("sources: source is read-only: %w", syscall.EPERM)

// ErrRange is returned for calls that reach outside [0, Size()).
var ErrRange = fmt.Errorf("sources: request outside the source: %w", syscall.EINVAL)

// CheckRange returns ErrRange unless [off, off+length) lies inside a source of
// the given size. It is safe against overflow.
func CheckRange(off, length, size int64) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return ErrRange
	}
	return nil
}
