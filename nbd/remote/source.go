package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
)

// Defaults of Options.
const (
	DefaultRetryWindow = 30 * time.Second
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
)

// Options configure Open. The zero value is usable.
type Options struct {
	// ReadOnly serves the export read-only even when the server offers
	// writes.
	ReadOnly bool
	// RetryWindow is how long requests wait for a lost connection to
	// come back before they fail with EIO (DefaultRetryWindow when 0).
	RetryWindow time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts, which doubles from the one to the other
	// (DefaultMinBackoff and DefaultMaxBackoff when 0).
	MinBackoff, MaxBackoff time.Duration
	// HandshakeTimeout bounds each connection's dial and handshake
	// (nbd.DefaultHandshakeTimeout when 0).
	HandshakeTimeout time.Duration
	// TLSConfig is the TLS configuration of an nbds:// URI (nbd.ClientOptions'
	// TLSConfig): every connection, the reconnections included, is
	// upgraded with NBD_OPT_STARTTLS and a new TLS handshake. It is
	// required for nbds://.
	TLSConfig *tls.Config
	// Logf receives one line when the connection is lost, when an
	// attempt to reconnect fails in a new way, when the retry window runs
	// out and when the connection is back. Nil discards them.
	Logf func(format string, args ...any)
}

// Dialer makes a new connection to the server, through the handshake.
type Dialer func(ctx context.Context) (*nbd.Client, error)

// Source is a remote export. See the package documentation for what it
// does when the connection is lost.
type Source struct {
	name string // the URI, for log lines and errors
	dial Dialer
	opts Options
	info nbd.ExportInfo // of the first connection
	caps sources.Caps

	mu        sync.Mutex
	client    *nbd.Client   // nil while the connection is down
	up        chan struct{} // closed when client is set again (or on Close)
	downSince time.Time
	// windowOver is set once a request has failed for want of a
	// connection during this outage (its log line is written once).
	windowOver bool
	closed     bool

	stop     context.CancelFunc // ends the reconnection loop
	loopDone sync.WaitGroup

	zerosOnce sync.Once
	zeros     []byte // for Zero on servers without NBD_CMD_WRITE_ZEROES
}

// Open connects to the export that uri names.
func Open(ctx context.Context, uri nbd.URI, opts Options) (*Source, error) {
	copts := nbd.ClientOptions{HandshakeTimeout: opts.HandshakeTimeout, TLSConfig: opts.TLSConfig}
	return OpenDialer(ctx, uri.String(), func(ctx context.Context) (*nbd.Client, error) {
		return nbd.DialURI(ctx, uri, copts)
	}, opts)
}

// OpenDialer is Open for a server that dial connects to; name stands for
// it in log lines and errors.
func OpenDialer(ctx context.Context, name string, dial Dialer, opts Options) (*Source, error) {
	if opts.RetryWindow <= 0 {
		opts.RetryWindow = DefaultRetryWindow
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	info := c.Info()
	if info.Size == 0 {
		c.Close()
		return nil, fmt.Errorf("%s: the export is empty (0 bytes): %w", name, sources.ErrEmpty)
	}
	f := info.Flags
	s := &Source{
		name: name, dial: dial, opts: opts, info: info, client: c,
		caps: sources.Caps{
			ReadOnly:   opts.ReadOnly || f&nbd.FlagReadOnly != 0,
			Flush:      f&nbd.FlagSendFlush != 0,
			Trim:       f&nbd.FlagSendTrim != 0,
			Zero:       f&nbd.FlagSendWriteZeroes != 0,
			Parallel:   true,
			Rotational: f&nbd.FlagRotational != 0,
		},
	}
	return s, nil
}

// Size is the export's size.
func (s *Source) Size() int64 { return s.info.Size }

// Caps reports what the export offers: read-only when the server says so
// (or Options.ReadOnly), flushes, trims and zeroes when the server takes
// them; every method may be called concurrently.
func (s *Source) Caps() sources.Caps { return s.caps }

// Info is what the server said about the export when the Source opened.
func (s *Source) Info() nbd.ExportInfo { return s.info }

// ErrClosed is returned by calls after Close.
var ErrClosed = fmt.Errorf("nbdremote: the source is closed: %w", syscall.EIO)

// ReadAt reads len(p) bytes at off. Requests longer than the server's
// maximum payload are split; ranges not aligned to the server's minimum
// block size are read through a buffer that is.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if err := sources.CheckRange(off, int64(len(p)), s.info.Size); err != nil {
		return 0, err
	}
	bs := int64(s.info.MinBlock)
	if off%bs != 0 || int64(len(p))%bs != 0 {
		return s.readUnaligned(p, off)
	}
	max := int(s.info.MaxPayload)
	for done := 0; done < len(p); {
		n := min(len(p)-done, max)
		if err := s.call(func(c *nbd.Client) error { return c.Read(p[done:done+n], off+int64(done)) }); err != nil {
			return done, err
		}
		done += n
	}
	return len(p), nil
}

// readUnaligned reads p at off through a buffer aligned to the server's
// minimum block size.
func (s *Source) readUnaligned(p []byte, off int64) (int, error) {
	bs := int64(s.info.MinBlock)
	start := off / bs * bs
	end := min((off+int64(len(p))+bs-1)/bs*bs, s.info.Size)
	buf := make([]byte, end-start)
	if _, err := s.ReadAt(buf, start); err != nil {
		return 0, err
	}
	return copy(p, buf[off-start:]), nil
}

// WriteAt writes p at off, split at the server's maximum payload.
func (s *Source) WriteAt(p []byte, off int64) (int, error) {
	if err := s.checkWrite(off, int64(len(p))); err != nil {
		return 0, err
	}
	max := int(s.info.MaxPayload)
	for done := 0; done < len(p); {
		n := min(len(p)-done, max)
		if err := s.call(func(c *nbd.Client) error { return c.Write(p[done:done+n], off+int64(done), false) }); err != nil {
			return done, err
		}
		done += n
	}
	return len(p), nil
}

// checkWrite refuses a modifying call that the export cannot take.
func (s *Source) checkWrite(off, length int64) error {
	if s.caps.ReadOnly {
		return sources.ErrReadOnly
	}
	if err := sources.CheckRange(off, length, s.info.Size); err != nil {
		return err
	}
	if bs := int64(s.info.MinBlock); off%bs != 0 || length%bs != 0 {
		return fmt.Errorf("nbdremote: %s: %d bytes at %d are not aligned to the server's %d-byte blocks: %w", s.name, length, off, bs, syscall.EINVAL)
	}
	return nil
}

// Flush sends NBD_CMD_FLUSH where the server takes it.
func (s *Source) Flush() error {
	if !s.caps.Flush || s.caps.ReadOnly {
		return nil
	}
	return s.call(func(c *nbd.Client) error { return c.Flush() })
}

// bigChunk is the most that one TRIM or WRITE_ZEROES asks: a multiple
// of every minimum block size, far below the protocol's 32-bit limit.
const bigChunk = 1 << 30

// Trim sends NBD_CMD_TRIM where the server takes it.
func (s *Source) Trim(off, length int64) error {
	if err := s.checkWrite(off, length); err != nil {
		return err
	}
	if !s.caps.Trim {
		return nil
	}
	return s.chunks(off, length, bigChunk, func(c *nbd.Client, o, n int64) error { return c.Trim(o, n) })
}

// Zero sends NBD_CMD_WRITE_ZEROES (with NBD_CMD_FLAG_NO_HOLE unless
// mayTrim), or writes zeros where the server does not take it.
func (s *Source) Zero(off, length int64, mayTrim bool) error {
	if err := s.checkWrite(off, length); err != nil {
		return err
	}
	if s.caps.Zero {
		return s.chunks(off, length, bigChunk, func(c *nbd.Client, o, n int64) error { return c.WriteZeroes(o, n, mayTrim) })
	}
	s.zerosOnce.Do(func() { s.zeros = make([]byte, min(int64(s.info.MaxPayload), 1<<20)) })
	return s.chunks(off, length, int64(len(s.zeros)), func(c *nbd.Client, o, n int64) error { return c.Write(s.zeros[:n], o, false) })
}

// chunks calls fn for [off, off+length) in pieces of at most size bytes.
func (s *Source) chunks(off, length, size int64, fn func(c *nbd.Client, off, n int64) error) error {
	for done := int64(0); done < length; {
		n := min(length-done, size)
		if err := s.call(func(c *nbd.Client) error { return fn(c, off+done, n) }); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// Close ends the reconnection attempts and closes the connection
// (NBD_CMD_DISC). A second Close returns nil.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	c := s.client
	s.client = nil
	if s.up != nil {
		close(s.up)
		s.up = nil
	}
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.loopDone.Wait()
	if c != nil {
		return c.Close()
	}
	return nil
}

// lostConn reports whether err means that the connection is gone (or
// was closed by another request that found it gone), so that the request
// is to be sent again on a new one.
func lostConn(err error) bool {
	return errors.Is(err, nbd.ErrConnLost)
}
