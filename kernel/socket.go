package kernel

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// socket is a NETLINK_GENERIC socket registered with the Go poller, so that
// deadlines (request timeouts, WatchLinkDead's cancellation) interrupt a
// blocked receive without tying up a thread.
type socket struct {
	f   *os.File
	rc  syscall.RawConn
	pid uint32
}

func dialSocket() (conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("getsockname", err)
	}
	nsa, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		unix.Close(fd)
		return nil, fmt.Errorf("getsockname: unexpected address type %T", sa)
	}
	// Best effort, both since 4.12: extended ACKs carry the kernel's reason
	// for an error (missing attributes, for one); capped ACKs leave out the
	// echoed request, which holds nothing we need.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)

	f := os.NewFile(uintptr(fd), "netlink")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &socket{f: f, rc: rc, pid: nsa.Pid}, nil
}

func (s *socket) send(b []byte) error {
	var serr error
	err := s.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("sendto", serr)
	}
	return nil
}

func (s *socket) receive() ([]byte, error) {
	for {
		var (
			b    []byte
			from unix.Sockaddr
			rerr error
		)
		err := s.rc.Read(func(fd uintptr) bool {
			// Peek first: with MSG_TRUNC netlink reports the datagram's
			// full length, so a STATUS answer for thousands of devices
			// is read whole rather than cut at a fixed buffer size.
			var n int
			n, _, rerr = unix.Recvfrom(int(fd), nil, unix.MSG_PEEK|unix.MSG_TRUNC)
			if rerr == unix.EAGAIN {
				return false
			}
			if rerr != nil {
				return true
			}
			b = make([]byte, n)
			n, from, rerr = unix.Recvfrom(int(fd), b, 0)
			if rerr == unix.EAGAIN {
				return false
			}
			b = b[:max(n, 0)]
			return true
		})
		if err != nil {
			return nil, err
		}
		if rerr != nil {
			return nil, os.NewSyscallError("recvfrom", rerr)
		}
		// Only the kernel (port 0) may answer or multicast; another
		// process could unicast to our port.
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue
		}
		return b, nil
	}
}

func (s *socket) portID() uint32 { return s.pid }

func (s *socket) setDeadline(t time.Time) error { return s.f.SetDeadline(t) }

func (s *socket) joinGroup(group uint32) error {
	var serr error
	err := s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(group))
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt", serr)
	}
	return nil
}

func (s *socket) close() error { return s.f.Close() }
