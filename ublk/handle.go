package ublk

import (
	"errors"
	"sync"
	"syscall"

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

// errnoOf is the errno err carries, EIO when it carries none.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) && e != 0 {
		return e
	}
	return syscall.EIO
}
