package nbd

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// clientSlots bound the clients of one ServeListeners: a connection takes
// a slot when it is accepted, before its handshake, and gives it back when
// it ends. A nil *clientSlots has no bound.
type clientSlots struct {
	free chan struct{}
}

func newClientSlots(n int) *clientSlots {
	if n <= 0 {
		return nil
	}
	return &clientSlots{free: make(chan struct{}, n)}
}

// take reports whether a slot was free, and takes it.
func (s *clientSlots) take() bool {
	if s == nil {
		return true
	}
	select {
	case s.free <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *clientSlots) give() {
	if s != nil {
		<-s.free
	}
}

func (s *clientSlots) limit() int { return cap(s.free) }

// activeConn is a net.Conn that counts its reads and writes, for
// watchIdle. It counts what goes through its own Read and Write (a TLS
// connection's records) and what goes through the syscall.RawConn it
// hands out (the transmission phase's raw reads, writev and sendfile),
// one atomic add per call: the requests themselves are not touched.
type activeConn struct {
	net.Conn
	calls atomic.Uint64
}

func (c *activeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.calls.Add(1)
	return n, err
}

func (c *activeConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.calls.Add(1)
	return n, err
}

// SyscallConn returns the connection's RawConn, counting its reads and
// writes; an error if the connection has none (Serve then reads through
// Read).
func (c *activeConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, syscall.EINVAL
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &activeRawConn{RawConn: rc, calls: &c.calls}, nil
}

type activeRawConn struct {
	syscall.RawConn
	calls *atomic.Uint64
}

func (r *activeRawConn) Read(f func(fd uintptr) bool) error {
	err := r.RawConn.Read(f)
	r.calls.Add(1)
	return err
}

func (r *activeRawConn) Write(f func(fd uintptr) bool) error {
	err := r.RawConn.Write(f)
	r.calls.Add(1)
	return err
}

// watchIdle closes c once nothing has been read from it or written to
// it for idle, checking a few times per idle period, until stop is
// closed. It reports whether it closed c.
func watchIdle(c *activeConn, idle time.Duration, stop <-chan struct{}) (closed bool) {
	tick := max(idle/4, time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	last, since := c.calls.Load(), time.Now()
	for {
		select {
		case <-stop:
			return false
		case now := <-t.C:
			if n := c.calls.Load(); n != last {
				last, since = n, now
				continue
			}
			if now.Sub(since) >= idle {
				c.Close()
				return true
			}
		}
	}
}
