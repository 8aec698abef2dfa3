package ublk

import (
	"errors"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// handler turns requests into Source calls. It is shared by the queues.
type handler struct {
	src      sources.Source
	size     int64
	readOnly bool
	// mu serializes the calls of a Source that is not Parallel; nil
	// otherwise.
	mu *sync.Mutex
	// ram maps a Source's RAM file for serveUserCopy; nil: none.
	ram *ramMap
}

func newHandler(src sources.Source, readOnly bool) *handler {
	h := &handler{src: src, size: src.Size(), readOnly: readOnly || src.Caps().ReadOnly}
	if !src.Caps().Parallel {
		h.mu = &sync.Mutex{}
	}
	return h
}

// serve carries out the request d with the tag's buffer buf and returns
// the result for COMMIT_AND_FETCH_REQ: the bytes transferred, 0, or a
// negative errno.
func (h *handler) serve(d *ioDesc, buf []byte) int32 {
	off, n := int64(d.startSector)<<9, int64(d.nrSectors)<<9
	op := d.op()
	if op != opFlush && sources.CheckRange(off, n, h.size) != nil {
		return -int32(syscall.EIO)
	}
	if (op == opRead || op == opWrite) && n > int64(len(buf)) {
		return -int32(syscall.EIO)
	}
	if op != opRead && op != opFlush && h.readOnly {
		return -int32(syscall.EROFS)
	}
	if h.mu != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
	}
	var err error
	switch op {
	case opRead:
		_, err = h.src.ReadAt(buf[:n], off)
	case opWrite:
		if _, err = h.src.WriteAt(buf[:n], off); err == nil && d.flags()&ioFlagFUA != 0 {
			err = h.src.Flush()
		}
	case opFlush:
		err = h.src.Flush()
	case opDiscard:
		err = h.src.Trim(off, n)
	case opWriteZeroes:
		err = h.src.Zero(off, n, d.flags()&ioFlagNoUnmap == 0)
	default:
		return -int32(syscall.EOPNOTSUPP)
	}
	if err != nil {
		return -int32(errnoOf(err))
	}
	if op == opRead || op == opWrite {
		return int32(n)
	}
	return 0
}

// serveUserCopy carries out request d on a device with flagUserCopy,
// whose data the kernel leaves in the request: pos is the request's
// offset in /dev/ublkcN (charFd). A read from a RAM file is copied by the
// kernel straight from the file's mapping (pwrite), a write to a memory:
// disk straight into it (pread); other reads and writes go through buf.
func (h *handler) serveUserCopy(d *ioDesc, buf []byte, charFd int, pos int64) int32 {
	op := d.op()
	if op != opRead && op != opWrite {
		return h.serve(d, buf)
	}
	off, n := int64(d.startSector)<<9, int64(d.nrSectors)<<9
	if sources.CheckRange(off, n, h.size) != nil {
		return -int32(syscall.EIO)
	}
	if op == opWrite && h.readOnly {
		return -int32(syscall.EROFS)
	}
	var p []byte
	if h.ram != nil && h.mu == nil {
		if op == opRead {
			p = h.ram.readable(off, n)
		} else if d.flags()&ioFlagFUA == 0 {
			p = h.ram.writableAt(off, n)
		}
	}
	switch {
	case p != nil && op == opRead:
		return transferred(userCopy(unix.SYS_PWRITE64, charFd, p, pos), n)
	case p != nil:
		return transferred(userCopy(unix.SYS_PREAD64, charFd, p, pos), n)
	case n > int64(len(buf)):
		return -int32(syscall.EIO)
	case op == opRead:
		if res := h.serve(d, buf); res < 0 {
			return res
		}
		return transferred(userCopy(unix.SYS_PWRITE64, charFd, buf[:n], pos), n)
	}
	if e := userCopy(unix.SYS_PREAD64, charFd, buf[:n], pos); e != 0 {
		return -int32(e)
	}
	return h.serve(d, buf)
}

// userCopy has the kernel copy all of p out of the request at pos
// (SYS_PREAD64) or into it (SYS_PWRITE64).
func userCopy(call uintptr, fd int, p []byte, pos int64) syscall.Errno {
	for len(p) > 0 {
		n, _, e := unix.Syscall6(call, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(pos), 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return e
		case n == 0:
			return syscall.EIO
		}
		p, pos = p[n:], pos+int64(n)
	}
	return 0
}

// transferred is the result of a request of n bytes whose copy ended with e.
func transferred(e syscall.Errno, n int64) int32 {
	if e != 0 {
		return -int32(e)
	}
	return int32(n)
}

// errnoOf is the errno err carries, EIO when it carries none.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) && e != 0 {
		return e
	}
	return syscall.EIO
}
