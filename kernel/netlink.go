package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// ErrNoDriver means the "nbd" generic netlink family does not exist, even
// after modprobe: the module is missing, or the kernel is older than 6.4 and
// the caller is outside the initial network namespace.
var ErrNoDriver = errors.New("nbd generic netlink family not found")

const (
	familyName    = "nbd"
	linkDeadGroup = "nbd_mc_group"
	modprobeLimit = 30 * time.Second
)

// DefaultTimeout is the receive timeout of a Family whose Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Family is the resolved "nbd" generic netlink family. A Family holds no socket: each method opens and
// closes its own, so one Family may be used from many goroutines.
type Family struct {
	// ID is the family id the kernel assigned, the nlmsg_type of every
	// request and reply.
	ID uint16
	// LinkDeadGroup is the id of the "nbd_mc_group" multicast group, which
	// carries NBD_CMD_LINK_DEAD; 0 if the kernel did not list it.
	LinkDeadGroup uint32
	// Timeout bounds the wait for the kernel's answer to one request. The
	// kernel handles NBD requests synchronously inside sendmsg, so the
	// answer is normally there at once; the timeout only matters if it is
	// never coming. Zero means DefaultTimeout.
	Timeout time.Duration

	// dial opens the socket requests go through; nil means a real
	// NETLINK_GENERIC socket. Tests substitute a fake kernel.
	dial func() (conn, error)
}

// Open resolves the "nbd" family. If it is missing, Open runs
// `modprobe nbd` once (its output and exit status are ignored: the second
// lookup decides) and looks again; if the family is still missing the
// error is ErrNoDriver.
func Open() (*Family, error) {
	return open(lookupFamily, modprobe)
}

// open is Open with the lookup and the module loader passed in, so the
// retry logic can be tested without a kernel.
func open(lookup func(name string) (*netlink.GenlFamily, error), load func()) (*Family, error) {
	gf, err := lookup(familyName)
	if errors.Is(err, syscall.ENOENT) {
		load()
		gf, err = lookup(familyName)
	}
	if errors.Is(err, syscall.ENOENT) {
		return nil, ErrNoDriver
	}
	if err != nil {
		return nil, fmt.Errorf("nbd netlink: resolve family: %w", err)
	}
	f := &Family{ID: gf.ID}
	for _, g := range gf.Groups {
		if g.Name == linkDeadGroup {
			f.LinkDeadGroup = g.ID
		}
	}
	return f, nil
}

func lookupFamily(name string) (*netlink.GenlFamily, error) {
	return netlink.GenlFamilyGet(name)
}

func modprobe() {
	ctx, cancel := context.WithTimeout(context.Background(), modprobeLimit)
	defer cancel()
	path, err := exec.LookPath("modprobe")
	if err != nil {
		// sudo and service managers often leave /sbin out of PATH.
		path = "/sbin/modprobe"
	}
	_ = exec.CommandContext(ctx, path, familyName).Run()
}

// Connect configures a device (NBD_CMD_CONNECT) and returns its index. It
// needs CAP_SYS_ADMIN (errors.Is(err, syscall.EPERM) otherwise); an explicit
// index that something holds open fails with EBUSY. The kernel starts
// reading from the sockets before Connect returns (udev and partition
// scans), so the server must already be serving them.
func (f *Family) Connect(req ConnectRequest) (index int, err error) {
	msg, err := connectMessage(f.ID, req)
	if err != nil {
		return -1, fmt.Errorf("nbd netlink connect: %w", err)
	}
	reply, err := f.do(msg, true)
	if err != nil {
		return -1, fmt.Errorf("nbd netlink connect: %w", err)
	}
	index, err = parseIndexReply(reply)
	if err != nil {
		return -1, fmt.Errorf("nbd netlink connect: %w", err)
	}
	return index, nil
}

// Disconnect disconnects device index (NBD_CMD_DISCONNECT): the kernel
// sends NBD_CMD_DISC on every socket, shuts them down and fails all
// in-flight I/O with EIO, so flush or unmount first. The device stays
// configured until its last opener closes it. Disconnecting an unconfigured
// device succeeds and does nothing.
func (f *Family) Disconnect(index int) error {
	msg, err := disconnectMessage(f.ID, index)
	if err != nil {
		return fmt.Errorf("nbd netlink disconnect: %w", err)
	}
	if _, err := f.do(msg, false); err != nil {
		return fmt.Errorf("nbd netlink disconnect: %w", err)
	}
	return nil
}

// Reconfigure changes a connected device (NBD_CMD_RECONFIGURE): live
// resize, timeouts, client flags, replacement sockets. The kernel answers
// EINVAL if the device is not connected, was disconnected, or BackendID does
// not match the one given to Connect.
func (f *Family) Reconfigure(req ReconfigureRequest) error {
	msg, err := reconfigureMessage(f.ID, req)
	if err != nil {
		return fmt.Errorf("nbd netlink reconfigure: %w", err)
	}
	if _, err := f.do(msg, false); err != nil {
		return fmt.Errorf("nbd netlink reconfigure: %w", err)
	}
	return nil
}

// Status reports device index, or every device in index order when index is
// -1 (NBD_CMD_STATUS, no privilege needed). An index that does not exist
// gives an empty slice and no error.
func (f *Family) Status(index int) ([]DeviceStatus, error) {
	msg, err := statusMessage(f.ID, index)
	if err != nil {
		return nil, fmt.Errorf("nbd netlink status: %w", err)
	}
	reply, err := f.do(msg, true)
	if err != nil {
		return nil, fmt.Errorf("nbd netlink status: %w", err)
	}
	devs, err := parseStatusReply(reply)
	if err != nil {
		return nil, fmt.Errorf("nbd netlink status: %w", err)
	}
	return devs, nil
}

// WatchLinkDead calls fn with the device index of every NBD_CMD_LINK_DEAD
// event (a socket of a connected device died without a disconnect being
// requested) until ctx is done, and then returns ctx.Err(). fn runs on the
// calling goroutine; while it runs, events queue in the socket, and if the
// queue overflows the receive fails with ENOBUFS and WatchLinkDead returns
// that error, since events were lost.
//
// The group is joined with setsockopt(NETLINK_ADD_MEMBERSHIP) because
// generic netlink group ids are often above 32, which the bind() bitmask
// cannot express.
func (f *Family) WatchLinkDead(ctx context.Context, fn func(index int)) error {
	if f.LinkDeadGroup == 0 {
		return errors.New("nbd netlink watch: family has no nbd_mc_group multicast group")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := f.dialConn()
	if err != nil {
		return fmt.Errorf("nbd netlink watch: %w", err)
	}
	defer c.close()
	if err := c.joinGroup(f.LinkDeadGroup); err != nil {
		return fmt.Errorf("nbd netlink watch: join multicast group %d: %w", f.LinkDeadGroup, err)
	}
	// A deadline in the past wakes the blocked receive when ctx is done.
	stop := context.AfterFunc(ctx, func() { _ = c.setDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		b, err := c.receive()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("nbd netlink watch: receive: %w", err)
		}
		msgs, err := splitMessages(b)
		if err != nil {
			return fmt.Errorf("nbd netlink watch: %w", err)
		}
		for _, m := range msgs {
			if m.typ != f.ID || len(m.payload) < genlHdrLen || m.payload[0] != cmdLinkDead {
				continue
			}
			index, err := parseIndexReply(m.raw)
			if err != nil {
				return fmt.Errorf("nbd netlink watch: link dead event: %w", err)
			}
			fn(index)
		}
	}
}

func (f *Family) dialConn() (conn, error) {
	if f.dial != nil {
		return f.dial()
	}
	return dialSocket()
}

func (f *Family) timeout() time.Duration {
	if f.Timeout > 0 {
		return f.Timeout
	}
	return DefaultTimeout
}

// do sends msg on a fresh socket and returns the kernel's answer: the reply
// message if wantReply, else nil once the ACK arrives.
func (f *Family) do(msg []byte, wantReply bool) ([]byte, error) {
	c, err := f.dialConn()
	if err != nil {
		return nil, err
	}
	defer c.close()
	timeout := f.timeout()
	if err := c.setDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	return roundTrip(c, f.ID, msg, wantReply, timeout)
}

// conn is a netlink socket as roundTrip and WatchLinkDead use it.
type conn interface {
	// send writes one datagram to the kernel.
	send(b []byte) error
	// receive reads one datagram sent by the kernel (datagrams from other
	// ports are dropped); it fails with os.ErrDeadlineExceeded once the
	// deadline passes.
	receive() ([]byte, error)
	// portID is the socket's netlink port id, which the kernel puts in
	// nlmsg_pid of its answers.
	portID() uint32
	setDeadline(t time.Time) error
	joinGroup(group uint32) error
	close() error
}

// requestSeq is the sequence number of every request. Each request has a
// socket of its own, so there is nothing to tell apart from it.
const requestSeq = 1

// roundTrip sends msg and reads until the answer that matches it: a message
// of type familyID if wantReply (CONNECT, STATUS), else the ACK (DISCONNECT,
// RECONFIGURE, sent with NLM_F_ACK). An NLMSG_ERROR with a non-zero errno
// ends the wait with that errno in either case.
func roundTrip(c conn, familyID uint16, msg []byte, wantReply bool, timeout time.Duration) ([]byte, error) {
	setSeq(msg, requestSeq)
	if err := c.send(msg); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	pid := c.portID()
	for {
		b, err := c.receive()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("no answer from the kernel within %v: %w", timeout, err)
		}
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		msgs, err := splitMessages(b)
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		for _, m := range msgs {
			if m.seq != requestSeq || m.pid != pid {
				continue
			}
			switch {
			case m.typ == typeError:
				if err := parseError(m); err != nil {
					return nil, err
				}
				if wantReply {
					return nil, errors.New("kernel acknowledged the request without replying")
				}
				return nil, nil
			case m.typ == familyID && wantReply:
				return m.raw, nil
			}
			// Anything else (NOOP, DONE, a message the ACK follows)
			// is not the answer; keep reading.
		}
	}
}
