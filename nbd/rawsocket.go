package nbd

import (
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawSocket reads and writes a connection's non-blocking socket with raw
// system calls, keeping Go's poller for the waiting. A socket call that
// would block returns EAGAIN at once, so it never needs the scheduler's
// syscall bookkeeping (entersyscall/exitsyscall); without it sysmon stops
// handing the goroutine's P to another thread for calls that only took a
// few microseconds, which cost the server about a tenth of its CPU in
// perf profiles of 4 KiB reads at depth 32.
//
// Its methods run on one goroutine each (Read on the reading one,
// WriteBuffers on the one holding the connection's write turn), so the
// state each one passes to its callback needs no lock.
type rawSocket struct {
	rc syscall.RawConn

	// Read's call, bound once so that passing it allocates nothing.
	rp    []byte
	rn    int
	rerr  syscall.Errno
	rcall func(fd uintptr) bool

	wiov  []unix.Iovec
	wn    int
	werr  syscall.Errno
	wcall func(fd uintptr) bool

	// SendFile's call, on the goroutine holding the write turn too.
	sfd   int
	soff  int64
	sleft int
	sn    int
	serr  syscall.Errno
	scall func(fd uintptr) bool
	pcall func(fd uintptr) bool // Splice's

	// SpliceIn's call, on the reading goroutine.
	ipipe int
	imax  int
	in    int
	ierr  syscall.Errno
	icall func(fd uintptr) bool
}

func newRawSocket(rc syscall.RawConn) *rawSocket {
	s := &rawSocket{rc: rc}
	s.rcall = s.read
	s.wcall = s.writev
	s.scall = s.sendfile
	s.pcall = s.splice
	s.icall = s.spliceIn
	return s
}

// rawCall makes a socket system call with RawSyscall6, again after EINTR.
// ready is false when the call would block (EAGAIN): the RawConn callback
// returns it so that the poller waits for the socket.
func rawCall(trap, a1, a2, a3, a4 uintptr) (n int, errno syscall.Errno, ready bool) {
	return rawCall6(trap, a1, a2, a3, a4, 0, 0)
}

// rawCall6 is rawCall with six arguments.
func rawCall6(trap, a1, a2, a3, a4, a5, a6 uintptr) (n int, errno syscall.Errno, ready bool) {
	for {
		r, _, e := unix.RawSyscall6(trap, a1, a2, a3, a4, a5, a6)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, 0, false
		}
		return int(r), e, true
	}
}

func (s *rawSocket) read(fd uintptr) (ready bool) {
	s.rn, s.rerr, ready = rawCall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rp[0])), uintptr(len(s.rp)), 0)
	return ready
}

func (s *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rp = p
	err := s.rc.Read(s.rcall)
	s.rp = nil
	switch {
	case err != nil:
		return 0, err // closed
	case s.rerr != 0:
		return 0, s.rerr
	case s.rn == 0:
		return 0, io.EOF
	}
	return s.rn, nil
}

func (s *rawSocket) writev(fd uintptr) (ready bool) {
	s.wn, s.werr, ready = rawCall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&s.wiov[0])), uintptr(len(s.wiov)), 0)
	return ready
}

// WriteBuffers writes every byte of bufs, in as few writev(2) calls as the
// socket buffer allows.
func (s *rawSocket) WriteBuffers(bufs [][]byte) error {
	s.wiov = s.wiov[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			s.wiov = append(s.wiov, unix.Iovec{Base: &b[0], Len: uint64(len(b))})
		}
	}
	iov := s.wiov
	for len(iov) > 0 {
		s.wiov = iov[:min(len(iov), maxIovecs)]
		if err := s.rc.Write(s.wcall); err != nil {
			return err
		}
		if s.werr != 0 {
			return s.werr
		}
		n := uint64(s.wn)
		for n > 0 {
			if n < iov[0].Len {
				iov[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(iov[0].Base), n))
				iov[0].Len -= n
				break
			}
			n -= iov[0].Len
			iov = iov[1:]
		}
	}
	s.wiov = s.wiov[:0]
	return nil
}

// maxIovecs is IOV_MAX, the most buffers one writev(2) takes.
const maxIovecs = 1024

// sendfile reads a file in RAM (ramRegioner): the call does not wait for a
// disk, so it needs no syscall bookkeeping either.
func (s *rawSocket) sendfile(fd uintptr) (ready bool) {
	s.sn, s.serr, ready = rawCall(unix.SYS_SENDFILE, fd, uintptr(s.sfd), uintptr(unsafe.Pointer(&s.soff)), uintptr(s.sleft))
	return ready
}

// SendFile sends n bytes of the file fd from offset off with sendfile(2).
// It fails with io.ErrUnexpectedEOF if the file ends first.
func (s *rawSocket) SendFile(fd int, off int64, n int) error {
	s.sfd, s.soff, s.sleft = fd, off, n
	for s.sleft > 0 {
		if err := s.rc.Write(s.scall); err != nil {
			return err
		}
		if s.serr != 0 {
			return s.serr
		}
		if s.sn == 0 {
			return io.ErrUnexpectedEOF
		}
		s.sleft -= s.sn // sendfile advanced s.soff itself
	}
	return nil
}

// splice moves bytes from the pipe s.sfd to the socket: the pipe holds
// them all already, so only the socket may make it wait.
func (s *rawSocket) splice(fd uintptr) (ready bool) {
	s.sn, s.serr, ready = rawCall6(unix.SYS_SPLICE, uintptr(s.sfd), 0, fd, 0, uintptr(s.sleft), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return ready
}

// Splice sends the n bytes the pipes hold, in order, with splice(2): the
// socket takes the pipes' pages. It fails with io.ErrUnexpectedEOF,
// sending nothing, if the pipes hold another number of bytes.
func (s *rawSocket) Splice(pipes []int, n int) error {
	held := 0
	for _, fd := range pipes {
		k, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // TIOCINQ is FIONREAD
		if err != nil {
			return io.ErrUnexpectedEOF
		}
		held += k
	}
	if held != n {
		return io.ErrUnexpectedEOF
	}
	// The pipes' side of the calls never blocks, so EAGAIN is the
	// socket's: the poller waits for it.
	for _, fd := range pipes {
		k, _ := unix.IoctlGetInt(fd, unix.TIOCINQ)
		s.sfd, s.sleft = fd, k
		for s.sleft > 0 {
			if err := s.rc.Write(s.pcall); err != nil {
				return err
			}
			if s.serr != 0 {
				return s.serr
			}
			if s.sn == 0 {
				return io.ErrUnexpectedEOF
			}
			s.sleft -= s.sn
		}
	}
	return nil
}

func (s *rawSocket) spliceIn(fd uintptr) (ready bool) {
	s.in, s.ierr, ready = rawCall6(unix.SYS_SPLICE, fd, 0, uintptr(s.ipipe), 0, uintptr(s.imax), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return ready
}

// SpliceIn moves at most max bytes from the socket into the pipe whose
// write end is pipe, which is empty, with splice(2), waiting until some
// come; it returns how many it moved, or io.EOF when the peer closed its
// end.
func (s *rawSocket) SpliceIn(pipe int, max int) (int, error) {
	s.ipipe, s.imax = pipe, max
	if err := s.rc.Read(s.icall); err != nil {
		return 0, err // closed
	}
	switch {
	case s.ierr != 0:
		return 0, s.ierr
	case s.in == 0:
		return 0, io.EOF
	}
	return s.in, nil
}

// Shutdown shuts the socket down both ways, which ends the connection for
// the peer and for the reading goroutine, without closing the descriptor
// under the goroutines still using it.
func (s *rawSocket) Shutdown() {
	s.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
}
