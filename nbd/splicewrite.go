package nbd

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/request"
)

// ramWriteRegioner is a source whose bytes sit in a file in RAM that the
// server may write itself (sources.File.RAMWriteRegion): the payloads of
// WRITEs over inlineMax go from the socket into the file with splice(2),
// through a pipe, where reading them into a buffer and writing them from
// it would copy each byte twice.
type ramWriteRegioner interface {
	RAMWriteRegion(off, n int64) (fd int, fileOff int64, ok bool)
}

// writePipeSize is the capacity asked of a connection's pipe for WRITE
// payloads (/proc/sys/fs/pipe-max-size by default); each turn of the
// splice moves at most what the pipe holds.
const writePipeSize = 1 << 20

// spliceWrite reads the payload of j's WRITE, which checkRequest has
// accepted, into the source's file when it can, and reports whether it
// did: then j.spliced is set, and j.werr holds the error of writing the
// file, if any (the payload is read whole either way). An error is the
// connection's: the peer closed it inside the payload.
func (c *conn) spliceWrite(j *job) (bool, error) {
	s := c.s
	req := &j.req
	if s.wregion == nil || c.raw == nil || req.Op != request.OpWrite || j.fail != 0 || req.Length <= inlineMax ||
		!s.caps.Parallel || s.caps.ReadOnly || !c.pipe() {
		return false, nil
	}
	fd, abs, ok := s.wregion.RAMWriteRegion(int64(req.Offset), int64(req.Length))
	if !ok {
		return false, nil
	}
	j.spliced = true
	n := int(req.Length)
	// What the reader has already taken in of the payload.
	if k := min(c.br.Buffered(), n); k > 0 {
		b, _ := c.br.Peek(k)
		j.werr = pwriteAll(fd, b, abs)
		c.br.Discard(k)
		abs += int64(k)
		n -= k
	}
	for n > 0 {
		m, err := c.raw.SpliceIn(c.wpipe[1], min(n, c.wpipeSize))
		if err != nil {
			return true, fmt.Errorf("%w: connection closed inside a WRITE payload: %v", ErrProtocol, err)
		}
		if err := c.drainPipe(fd, &abs, m); err != nil && j.werr == nil {
			j.werr = err
		}
		n -= m
	}
	return true, nil
}

// pipe makes the connection's pipe for WRITE payloads the first time;
// false when it cannot.
func (c *conn) pipe() bool {
	if c.wpipeSize > 0 {
		return true
	}
	if c.wpipeSize < 0 {
		return false
	}
	if err := unix.Pipe2(c.wpipe[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		c.wpipeSize = -1
		return false
	}
	unix.FcntlInt(uintptr(c.wpipe[1]), unix.F_SETPIPE_SZ, writePipeSize) // else the default
	size, err := unix.FcntlInt(uintptr(c.wpipe[1]), unix.F_GETPIPE_SZ, 0)
	if err != nil || size <= 0 {
		c.closePipe()
		c.wpipeSize = -1
		return false
	}
	c.wpipeSize = size
	return true
}

func (c *conn) closePipe() {
	if c.wpipeSize > 0 {
		unix.Close(c.wpipe[0])
		unix.Close(c.wpipe[1])
	}
}

// drainPipe moves the m bytes the pipe holds into the file fd at *abs,
// advancing it. When the file fails, the rest is read out of the pipe and
// dropped, so that the pipe is empty again, and the error is returned.
func (c *conn) drainPipe(fd int, abs *int64, m int) error {
	for m > 0 {
		r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(c.wpipe[0]), 0, uintptr(fd), uintptr(unsafe.Pointer(abs)), uintptr(m), unix.SPLICE_F_MOVE)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0 || r == 0:
			err := error(e)
			if e == 0 {
				err = syscall.EIO
			}
			c.dropPipe(m)
			return err
		}
		m -= int(r)
	}
	return nil
}

// dropPipe reads m bytes out of the pipe and drops them.
func (c *conn) dropPipe(m int) {
	var scratch [4096]byte
	for m > 0 {
		r, err := unix.Read(c.wpipe[0], scratch[:min(m, len(scratch))])
		if err == unix.EINTR {
			continue
		}
		if err != nil || r <= 0 {
			return
		}
		m -= r
	}
}

// pwriteAll writes all of p at abs in the file fd.
func pwriteAll(fd int, p []byte, abs int64) error {
	for len(p) > 0 {
		n, _, e := unix.RawSyscall6(unix.SYS_PWRITE64, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(abs), 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return e
		case n == 0:
			return syscall.EIO
		}
		p = p[n:]
		abs += int64(n)
	}
	return nil
}
