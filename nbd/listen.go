package nbd

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// ListenOptions configure ServeListeners. The zero value is usable.
type ListenOptions struct {
	Handshake HandshakeOptions
	// Logf receives one line when a client has chosen an export (its
	// address, the export, and TLS or not: DescribeTLS), one when its
	// connection ends, and one for a handshake that failed. Nil discards
	// them.
	Logf func(format string, args ...any)
	// MaxClients bounds the clients connected at once, over all the
	// listeners, counted from accept (the handshake included) to close: a
	// client past it is accepted and closed at once, with a log line, and
	// sees the connection end before the greeting. 0 is no bound.
	MaxClients int
	// IdleTimeout closes a client's connection, with a log line, when
	// nothing has been read from it or written to it for that long in
	// the transmission phase (a request that takes longer to answer
	// counts as idle too). 0 is none. The handshake has its own bound,
	// Handshake.Timeout.
	IdleTimeout time.Duration
	// Clients, when not nil, is called with +1 when a client has chosen
	// an export (its transmission phase begins) and with -1 when that
	// client's connection has ended, so that the caller can count the
	// clients of each export. It is called from the clients' goroutines,
	// concurrently, and should return soon.
	Clients func(e *Export, delta int)
}

// ServeListeners accepts clients on every listener of lns and serves each
// on its own goroutine: the handshake (HandshakeConn, with TLS as
// opts.Handshake says), then the transmission phase of the export it
// chose, on that export's Server, over TLS when the client started it. A
// client that fails the handshake or breaks the protocol loses its
// connection, never the others.
//
// When ctx is cancelled, ServeListeners closes the listeners and every
// connection (requests being served are answered first, as in Serve) and
// returns nil once all have ended. When a listener's Accept fails with an
// error that is not temporary, it closes the others too and returns that
// error after the same wait. It does not flush the exports' sources.
func ServeListeners(ctx context.Context, lns []net.Listener, exports Exports, opts ListenOptions) error {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		for _, ln := range lns {
			ln.Close()
		}
	})
	defer stop()
	ids := &connIDs{next: map[*Server]int{}}
	slots := newClientSlots(opts.MaxClients)
	var conns sync.WaitGroup
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		conns.Add(1)
		go func() {
			defer conns.Done()
			err := acceptLoop(ctx, ln, exports, opts, ids, slots, &conns)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	conns.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// connIDs numbers each export's connections, for Options.Observe.
type connIDs struct {
	mu   sync.Mutex
	next map[*Server]int
}

func (c *connIDs) take(s *Server) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.next[s]
	c.next[s] = id + 1
	return id
}

// acceptLoop accepts clients on ln until ctx is cancelled (nil) or Accept
// fails for good, starting a goroutine per client counted in conns, and
// closing at once a client for which slots has no room.
func acceptLoop(ctx context.Context, ln net.Listener, exports Exports, opts ListenOptions, ids *connIDs, slots *clientSlots, conns *sync.WaitGroup) error {
	backoff := time.Duration(0)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of descriptors or the like: wait and try again,
				// as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				opts.Logf("nbd: accept: %v; retrying in %v", err, backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if !slots.take() {
			opts.Logf("client %s: refused: the limit of clients connected at once (%d) is reached", clientAddr(c), slots.limit())
			c.Close()
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer slots.give()
			defer c.Close()
			serveClient(ctx, c, exports, opts, ids)
		}()
	}
}

// isTemporary reports whether an Accept error may go away by itself
// (EMFILE, ENFILE, ECONNABORTED and the like).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// serveClient runs one client's handshake and transmission phase.
func serveClient(ctx context.Context, c net.Conn, exports Exports, opts ListenOptions, ids *connIDs) {
	addr := clientAddr(c)
	var active *activeConn
	if opts.IdleTimeout > 0 {
		active = &activeConn{Conn: c}
		c = active
	}
	sess, conn, err := HandshakeConn(ctx, c, exports, opts.Handshake)
	if err != nil {
		switch {
		case errors.Is(err, ErrAborted):
			opts.Logf("client %s: left during the handshake (NBD_OPT_ABORT)", addr)
		case ctx.Err() == nil:
			opts.Logf("client %s: handshake failed: %v", addr, err)
		}
		return
	}
	exp := sess.Export
	opts.Logf("client %s: export %q (%d bytes, flags %#x), %s", addr, exp.Name, exp.Size(), exp.flags(sess.StructuredReplies || sess.ExtendedHeaders), DescribeTLS(conn))
	var idled func() bool
	if active != nil {
		stop := make(chan struct{})
		closed := make(chan bool, 1)
		go func() { closed <- watchIdle(active, opts.IdleTimeout, stop) }()
		idled = func() bool {
			close(stop)
			return <-closed
		}
	}
	if opts.Clients != nil {
		opts.Clients(exp, 1)
		defer opts.Clients(exp, -1)
	}
	err = sess.Serve(ctx, conn, ids.take(exp.Server))
	if idled != nil && idled() {
		opts.Logf("client %s: export %q: idle for %v, disconnected", addr, exp.Name, opts.IdleTimeout)
		return
	}
	if err != nil && ctx.Err() == nil {
		opts.Logf("client %s: export %q: connection ended: %v", addr, exp.Name, err)
		return
	}
	opts.Logf("client %s: export %q: disconnected", addr, exp.Name)
}

// clientAddr names a client in log lines: its address, or for a Unix
// socket (whose clients have none) "unix:" and the socket's path.
func clientAddr(c net.Conn) string {
	addr := c.RemoteAddr().String()
	if addr == "" || addr == "@" {
		addr = "unix:" + c.LocalAddr().String()
	}
	return addr
}
