package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
)

// ClientOptions configure Dial and NewClient. The zero value is usable.
type ClientOptions struct {
	// Export is the name of the export to use ("" is the server's
	// default export).
	Export string
	// HandshakeTimeout bounds connecting and the handshake, the TLS
	// handshake included (DefaultHandshakeTimeout when 0).
	HandshakeTimeout time.Duration
	// TLSConfig, when set, makes TLS required: NBD_OPT_STARTTLS is the
	// first option, the TLS handshake follows with this configuration
	// (TLS 1.2 at least, whatever its MinVersion), and every other option
	// and the transmission phase go over TLS. A server that does not offer
	// TLS fails the handshake with an error wrapping ErrTLSRefused.
	TLSConfig *tls.Config
	// CompactHeaders, when set, keeps the handshake from asking for
	// extended headers (NBD_OPT_EXTENDED_HEADERS): requests and replies
	// then have the compact headers whatever the server offers.
	CompactHeaders bool
}

// ErrConnLost wraps every error that means the connection to the server is
// gone or unusable: it broke, the server broke the protocol, or the server
// is shutting down (NBD_ESHUTDOWN). The request may have been carried out
// or not; a client that reconnects may send it again.
var ErrConnLost = errors.New("nbd: connection to the server lost")

// ErrClientClosed is returned by requests made after Close.
var ErrClientClosed = fmt.Errorf("%w: the client is closed", ErrConnLost)

// Client is the client side of one NBD connection in the transmission
// phase: with extended headers when the server agreed to them (32-byte
// requests with 64-bit lengths, every reply in extended chunks, a READ's
// data in any number of data and hole chunks), otherwise with compact
// requests and simple replies. Its methods may be called from many
// goroutines at once: requests are pipelined, each waiting for its own
// reply, which one reading goroutine matches to it by cookie.
//
// A Client checks every request against the export (range, flags, size
// constraints) before sending it, and every reply against the requests in
// flight; a server that breaks the protocol loses the connection, and every
// request then fails with an error wrapping ErrConnLost.
type Client struct {
	conn net.Conn
	info ExportInfo
	br   *bufio.Reader

	wmu sync.Mutex // serializes writes of requests

	mu     sync.Mutex
	calls  map[uint64]*call // in flight, by cookie
	cookie uint64
	err    error // set once the connection is lost or closed

	pool sync.Pool // *call
	done chan struct{}

	// scratch holds the payload of an error chunk; readLoop's own.
	scratch []byte
}

// call is one request in flight.
type call struct {
	op   request.Op
	hdr  [ExtRequestSize]byte
	data []byte // READ: where the reply's data goes
	bufs net.Buffers
	vec  [2][]byte
	done chan error // capacity 1: the reply's outcome

	// With extended headers, what the chunks so far said, read by
	// readLoop only: the request's offset, the bytes of a READ that
	// data and hole chunks covered, the first error chunk's value.
	off     uint64
	covered uint64
	code    uint32
	exts    []clientExtent // BLOCK_STATUS: the reply's descriptors
}

// Dial connects to an NBD server over network ("tcp" or "unix") at
// address and runs the handshake for opts.Export.
func Dial(ctx context.Context, network, address string, opts ClientOptions) (*Client, error) {
	timeout := opts.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	c, err := NewClient(ctx, conn, opts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// DialURI is Dial for the server and export that u names. A TLS URI
// (nbds://) needs opts.TLSConfig, which the caller builds from u's TLS
// parameters.
func DialURI(ctx context.Context, u URI, opts ClientOptions) (*Client, error) {
	if u.TLS && opts.TLSConfig == nil {
		return nil, fmt.Errorf("nbd: %s: TLS is required and no TLS configuration was given", u)
	}
	opts.Export = u.Export
	return Dial(ctx, u.Network, u.Address, opts)
}

// NewClient runs the handshake on conn, a connection to an NBD server, and
// returns a Client in the transmission phase. The Client owns conn from
// then on; on failure the caller closes it. The handshake is bounded by
// opts.HandshakeTimeout and by ctx.
func NewClient(ctx context.Context, conn net.Conn, opts ClientOptions) (*Client, error) {
	timeout := opts.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	raw := conn
	raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	var startTLS func() (io.ReadWriter, error)
	tlsUp := false
	if opts.TLSConfig != nil {
		startTLS = func() (io.ReadWriter, error) {
			cfg := opts.TLSConfig.Clone()
			cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
			tc := tls.Client(raw, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, fmt.Errorf("nbd: TLS handshake: %w", err)
			}
			conn, tlsUp = tc, true
			return tc, nil
		}
	}
	info, err := clientHandshake(conn, opts.Export, startTLS, !opts.CompactHeaders)
	stopped := stop()
	switch {
	case err != nil && (!stopped || ctx.Err() != nil):
		return nil, fmt.Errorf("nbd: handshake: %w", context.Cause(ctx))
	case err != nil && tlsUp && hungUp(err):
		return nil, fmt.Errorf("%w (the server hung up after the TLS handshake: does it want a client certificate?)", err)
	case err != nil:
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return newClient(conn, info), nil
}

// hungUp reports whether err says that the peer closed the connection.
func hungUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// newClient starts the transmission phase on conn for the export info
// describes.
func newClient(conn net.Conn, info ExportInfo) *Client {
	c := &Client{
		conn:  conn,
		info:  info,
		br:    bufio.NewReaderSize(conn, 64<<10),
		calls: map[uint64]*call{},
		done:  make(chan struct{}),
	}
	c.pool.New = func() any { return &call{done: make(chan error, 1)} }
	go c.readLoop()
	return c
}

// Info describes the export, as the handshake told it.
func (c *Client) Info() ExportInfo { return c.info }

// Close sends NBD_CMD_DISC and closes the connection; requests still in
// flight fail with ErrClientClosed. A second Close returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.err = ErrClientClosed
	c.mu.Unlock()
	var disc [ExtRequestSize]byte
	c.wmu.Lock()
	c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	c.conn.Write(disc[:c.putRequest(disc[:], RequestHeader{Op: request.OpDisc})])
	c.wmu.Unlock()
	c.fail(ErrClientClosed)
	<-c.done
	return nil
}

// fail ends the connection with err: every request in flight gets err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	err = c.err
	calls := c.calls
	c.calls = map[uint64]*call{}
	c.mu.Unlock()
	c.conn.Close()
	for _, cl := range calls {
		cl.done <- err
	}
}

// Read reads len(p) bytes at off into p (NBD_CMD_READ).
func (c *Client) Read(p []byte, off int64) error {
	if err := c.check(request.OpRead, off, int64(len(p)), true); err != nil {
		return err
	}
	return c.do(request.OpRead, 0, off, uint64(len(p)), nil, p)
}

// Write writes p at off (NBD_CMD_WRITE); with fua, the data is durable
// when Write returns (NBD_CMD_FLAG_FUA), where the server offers FUA.
func (c *Client) Write(p []byte, off int64, fua bool) error {
	if err := c.check(request.OpWrite, off, int64(len(p)), true); err != nil {
		return err
	}
	var f request.Flags
	if fua && c.info.Flags&FlagSendFUA != 0 {
		f = request.FlagFUA
	}
	if c.info.ExtendedHeaders {
		f |= request.FlagPayloadLen
	}
	return c.do(request.OpWrite, f, off, uint64(len(p)), p, nil)
}

// Flush makes every completed write durable (NBD_CMD_FLUSH). It returns
// nil at once when the server does not offer flushes: its writes are.
func (c *Client) Flush() error {
	if c.info.Flags&FlagSendFlush == 0 {
		return nil
	}
	return c.do(request.OpFlush, 0, 0, 0, nil, nil)
}

// Trim discards length bytes at off (NBD_CMD_TRIM), a length below 4 GiB
// unless extended headers were agreed.
// It returns nil at once when the server does not offer trims.
func (c *Client) Trim(off, length int64) error {
	if c.info.Flags&FlagSendTrim == 0 {
		return nil
	}
	if err := c.check(request.OpTrim, off, length, false); err != nil {
		return err
	}
	return c.do(request.OpTrim, 0, off, uint64(length), nil, nil)
}

// ErrUnsupported is returned for requests the server does not offer.
var ErrUnsupported = errors.New("nbd: the server does not offer this request")

// WriteZeroes makes length bytes at off, a length below 4 GiB unless
// extended headers were agreed, read back as zeros (NBD_CMD_WRITE_ZEROES); without mayTrim, their storage stays
// allocated (NBD_CMD_FLAG_NO_HOLE). It returns ErrUnsupported when the
// server does not offer it.
func (c *Client) WriteZeroes(off, length int64, mayTrim bool) error {
	if c.info.Flags&FlagSendWriteZeroes == 0 {
		return ErrUnsupported
	}
	if err := c.check(request.OpZero, off, length, false); err != nil {
		return err
	}
	var f request.Flags
	if !mayTrim {
		f = request.FlagNoHole
	}
	return c.do(request.OpZero, f, off, uint64(length), nil, nil)
}

// ErrBadRequest wraps the errors of requests that the Client refuses to
// send: outside the export, misaligned, too long, or writes to a
// read-only export.
var ErrBadRequest = errors.New("nbd: request not sent")

// check refuses a request that the export cannot take.
func (c *Client) check(op request.Op, off, length int64, payload bool) error {
	i := &c.info
	switch {
	case op != request.OpRead && op != request.OpBlockStatus && i.Flags&FlagReadOnly != 0:
		return fmt.Errorf("%w: %v to a read-only export", ErrBadRequest, op)
	case off < 0 || length < 0 || off > i.Size || length > i.Size-off:
		return fmt.Errorf("%w: %v of %d bytes at %d is outside the export (%d bytes)", ErrBadRequest, op, length, off, i.Size)
	case payload && length > int64(i.MaxPayload), !payload && !i.ExtendedHeaders && length > 1<<32-1:
		return fmt.Errorf("%w: %v of %d bytes is over the limit", ErrBadRequest, op, length)
	case off%int64(i.MinBlock) != 0 || length%int64(i.MinBlock) != 0:
		return fmt.Errorf("%w: %v of %d bytes at %d is not aligned to the server's %d-byte blocks", ErrBadRequest, op, length, off, i.MinBlock)
	}
	return nil
}

// do sends one request and waits for its reply. payload is a WRITE's
// data, dst a READ's destination.
func (c *Client) do(op request.Op, flags request.Flags, off int64, length uint64, payload, dst []byte) error {
	cl := c.pool.Get().(*call)
	err := c.doCall(cl, op, flags, off, length, payload, dst)
	c.pool.Put(cl)
	return err
}

// doCall sends one request as cl and waits for its reply.
func (c *Client) doCall(cl *call, op request.Op, flags request.Flags, off int64, length uint64, payload, dst []byte) error {
	cl.op, cl.data = op, dst
	cl.off, cl.covered, cl.code = uint64(off), 0, 0
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.cookie++
	cookie := c.cookie
	c.calls[cookie] = cl
	c.mu.Unlock()
	n := c.putRequest(cl.hdr[:], RequestHeader{Flags: flags, Op: op, Cookie: cookie, Offset: uint64(off), Length: length})
	cl.vec = [2][]byte{cl.hdr[:n], payload}
	cl.bufs = cl.vec[:]
	if payload == nil {
		cl.bufs = cl.vec[:1]
	}
	c.wmu.Lock()
	_, err := cl.bufs.WriteTo(c.conn)
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("%w: sending %v: %w", ErrConnLost, op, err))
	}
	err = <-cl.done
	cl.data, cl.vec, cl.bufs = nil, [2][]byte{}, nil
	return err
}

// putRequest encodes r into b, in the header format agreed, and returns
// the header's size.
func (c *Client) putRequest(b []byte, r RequestHeader) int {
	if c.info.ExtendedHeaders {
		PutExtendedRequest(b, r)
		return ExtRequestSize
	}
	PutRequest(b, r)
	return RequestSize
}

// readLoop reads replies until the connection ends, handing each to its
// request.
func (c *Client) readLoop() {
	defer close(c.done)
	var hdr [ExtChunkHeaderSize]byte
	n, reply := ReplySize, c.reply
	if c.info.ExtendedHeaders {
		n, reply = ExtChunkHeaderSize, c.extendedReply
	}
	for {
		if _, err := io.ReadFull(c.br, hdr[:n]); err != nil {
			c.fail(fmt.Errorf("%w: %w", ErrConnLost, err))
			return
		}
		if err := reply(hdr[:n]); err != nil {
			c.fail(err)
			return
		}
	}
}

// reply handles one reply whose header is hdr: its data, if a READ
// succeeded, is read into the request's buffer.
func (c *Client) reply(hdr []byte) error {
	r, err := parseClientReply(hdr)
	if err != nil {
		return err
	}
	c.mu.Lock()
	cl := c.calls[r.Cookie]
	delete(c.calls, r.Cookie)
	c.mu.Unlock()
	if cl == nil {
		return fmt.Errorf("%w: %w: a reply with cookie %#x, which no request in flight has", ErrConnLost, ErrProtocol, r.Cookie)
	}
	if r.Error == 0 && cl.op == request.OpRead {
		if _, err := io.ReadFull(c.br, cl.data); err != nil {
			err = fmt.Errorf("%w: reading %d bytes of READ data: %w", ErrConnLost, len(cl.data), err)
			cl.done <- err
			return err
		}
	}
	cl.done <- replyError(cl.op, r.Error)
	return nil
}
