package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// DefaultWorkers is the number of goroutines per connection that call the
// Source. The kernel keeps up to 128 requests in flight per socket; 16 is
// enough to keep two cores and a page cache busy while bounding the number of
// OS threads blocked in pread/pwrite.
const DefaultWorkers = 16

// Options configures a Server. The zero value is usable.
type Options struct {
	// Workers is the number of goroutines per connection that serve
	// requests concurrently (DefaultWorkers when 0). Sources that are not
	// Parallel are still called one at a time.
	Workers int
	// Logf receives one line per protocol problem (bad magic, absurd
	// lengths, failed reply writes). Nil discards them.
	Logf func(format string, args ...any)
	// Observe, when not nil, is called once per request after its reply
	// has been queued (DISC, which has no reply, is not observed). It is
	// called from the connection's worker goroutines, concurrently, and
	// must not block: the request's worker waits for it. The Request is
	// the one sent on connection Conn (the number given to ServeConn),
	// with the time its header had been read, the time until its reply
	// was queued (waiting for a worker included) and the NBD error sent;
	// it is passed by value and holds no pointers into the server, so
	// observing allocates nothing. When Observe is nil the server does not
	// even read the clock.
	Observe func(request.Request)
}

// Server serves a Source to the Linux NBD driver (or any client that starts
// in the transmission phase, with simple replies only): the kernel end of a
// socketpair begins directly with 28-byte requests, there is no handshake.
//
// A Server may serve several connections at once (CAN_MULTI_CONN): the
// kernel's multi-connection flush rule is met because every completed write
// is visible to every connection as soon as the Source returns.
type Server struct {
	src    sources.Source
	size   uint64
	caps   sources.Caps
	opts   Options
	pool   bufferPool
	serial sync.Mutex  // held around Source calls when !caps.Parallel
	region ramRegioner // src, when its READ replies can be sent with sendfile
	// disc is set once any connection has received NBD_CMD_DISC: the peer
	// asked to end, as opposed to a connection that just closed.
	disc atomic.Bool
}

// Disconnected reports whether a peer has sent NBD_CMD_DISC on any
// connection. A supervisor uses it to tell a detach (the kernel sends DISC
// on every live connection before closing them) from connections that died.
func (s *Server) Disconnected() bool { return s.disc.Load() }

// NewServer returns a Server for src. The Server does not close src.
func NewServer(src sources.Source, opts Options) *Server {
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	s := &Server{src: src, size: uint64(src.Size()), caps: src.Caps(), opts: opts}
	s.region, _ = src.(ramRegioner)
	return s
}

// ramRegioner is a source whose bytes sit in a file in RAM (sources.File
// on a memfd or tmpfs). READ replies larger than inlineMax are sent from it
// with sendfile(2): the socket takes references to the file's pages instead
// of the server copying them into a buffer and the socket copying them
// again. The kernel has copied the data out of the socket before it
// completes the READ, so only writes that race with the READ, whose
// outcome NBD leaves open anyway, can show in the reply.
type ramRegioner interface {
	RAMRegion(off, n int64) (fd int, fileOff int64, ok bool)
}

// TransmissionFlags returns the flags to hand to the kernel
// (NBD_ATTR_SERVER_FLAGS) for caps. FUA is offered whenever flushes are, and
// implemented as a write followed by Flush.
func TransmissionFlags(caps sources.Caps, multiConn bool) uint64 {
	f := uint64(FlagHasFlags)
	if caps.ReadOnly {
		f |= FlagReadOnly
	} else {
		if caps.Flush {
			f |= FlagSendFlush | FlagSendFUA
		}
		if caps.Trim {
			f |= FlagSendTrim
		}
		// WRITE_ZEROES is always offered on writable sources: the server
		// falls back to writing zeros, and it saves the kernel from
		// sending the zeros over the socket.
		f |= FlagSendWriteZeroes
	}
	if caps.Rotational {
		f |= FlagRotational
	}
	if multiConn {
		f |= FlagCanMultiConn
	}
	return f
}

// ErrProtocol is wrapped by the errors Serve returns when the peer breaks
// the protocol; the connection cannot be used any more.
var ErrProtocol = errors.New("nbd: protocol error")

type job struct {
	req   RequestHeader
	buf   *buffer   // WRITE payload
	start time.Time // header read; set only when observing
}

type conn struct {
	s    *Server
	id   int // connection number, for request.Request.Conn
	rw   io.ReadWriter
	br   *bufio.Reader
	jobs chan job
	hdr  [RequestSize]byte

	wmu     sync.Mutex
	queue   []outFrame // replies waiting for the writer, under wmu
	spare   []outFrame // the previous batch's storage, reused
	writing bool       // a worker is writing; under wmu
	// corked is set while readLoop serves requests itself: replies wait
	// in queue until it is about to block on the socket. Under wmu.
	corked bool

	// raw, when not nil, reads and writes rw's socket with raw system
	// calls (a net.Conn: what nbdloop serves the kernel on).
	raw *rawSocket

	// Owned by the writing worker.
	iov  [][]byte
	bufs net.Buffers
	werr error // first reply write error
}

// Serve serves requests from rw until the peer sends NBD_CMD_DISC or closes
// its end (nil), ctx is cancelled (ctx.Err()), or the peer breaks the
// protocol: a bad magic or a READ/WRITE longer than MaxPayload (an error
// wrapping ErrProtocol). Requests run concurrently and their replies go out
// in completion order, frames never interleaving. For an InMemory Source the
// reading goroutine serves requests of up to 128 KiB itself, in order, and
// writes the replies of all the requests it had already received together. Serve returns only after
// every request it read has been answered or has failed to be. It does not
// close rw except to interrupt a blocked read when ctx is cancelled, and then
// only if rw is an io.Closer.
func (s *Server) Serve(ctx context.Context, rw io.ReadWriter) error {
	return s.ServeConn(ctx, rw, 0)
}

// ServeConn is Serve for the connection numbered id: the number only
// labels the requests passed to Options.Observe (nbdloop numbers its
// connections 0..N-1 in the order it hands them to the kernel).
func (s *Server) ServeConn(ctx context.Context, rw io.ReadWriter, id int) error {
	c := &conn{
		s:    s,
		id:   id,
		rw:   rw,
		jobs: make(chan job, 128),
	}
	var in io.Reader = rw
	if sc, ok := rw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = newRawSocket(rc)
			in = c.raw
		}
	}
	c.br = bufio.NewReaderSize(in, 256<<10)
	var wg sync.WaitGroup
	for i := 0; i < s.opts.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.worker()
		}()
	}
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			if cl, ok := rw.(io.Closer); ok {
				cl.Close()
			}
		case <-stop:
		}
	}()
	err := c.readLoop()
	close(c.jobs)
	wg.Wait()
	close(stop)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		s.opts.Logf("nbd: closing connection: %v", err)
	}
	return err
}

func (c *conn) readLoop() error {
	s := c.s
	inMemory := s.caps.InMemory
	corked := false
	// uncork sends the replies that piled up while the loop was serving
	// requests itself; it runs before every read that may block.
	uncork := func() {
		if corked {
			c.uncork()
			corked = false
		}
	}
	defer uncork()
	for {
		if inMemory && c.br.Buffered() < RequestSize {
			uncork()
		}
		if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				return nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%w: connection closed inside a request header", ErrProtocol)
			}
			return fmt.Errorf("reading request: %w", err)
		}
		req, err := ParseRequest(c.hdr[:])
		if err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		j := job{req: req}
		if s.opts.Observe != nil {
			j.start = time.Now()
		}
		switch req.Op {
		case request.OpDisc:
			s.disc.Store(true)
			return nil
		case request.OpRead:
			if req.Length > MaxPayload {
				return fmt.Errorf("%w: read of %d bytes is over the %d byte limit", ErrProtocol, req.Length, MaxPayload)
			}
		case request.OpWrite:
			if req.Length > MaxPayload {
				return fmt.Errorf("%w: write of %d bytes is over the %d byte limit", ErrProtocol, req.Length, MaxPayload)
			}
			j.buf = s.pool.get(int(req.Length))
			if inMemory && c.br.Buffered() < int(req.Length) {
				uncork()
			}
			if _, err := io.ReadFull(c.br, j.buf.b); err != nil {
				s.pool.put(j.buf)
				return fmt.Errorf("%w: connection closed inside a write payload: %v", ErrProtocol, err)
			}
		}
		if inMemory && req.Length <= inlineMax {
			if !corked {
				c.wmu.Lock()
				c.corked = true
				c.wmu.Unlock()
				corked = true
			}
			c.handle(j)
			continue
		}
		c.jobs <- j
	}
}

// inlineMax is the largest request an InMemory source serves on the reading
// goroutine. Small requests cost less than the hand-off to a worker
// (BenchmarkServerInlineRead4K); copying megabytes is better spread over
// the cores (BenchmarkServerRead1M). Figures: docs/performance.md.
const inlineMax = 128 << 10

// uncork ends a batch of requests served by readLoop: replies queued
// while corked go out together now, unless a worker is writing, which then
// writes them too.
func (c *conn) uncork() {
	c.wmu.Lock()
	c.corked = false
	c.takeWriteTurn()
}

// takeWriteTurn writes the queue unless another goroutine holds the write
// turn, which will write what was queued. c.wmu is held on entry and
// released on return.
func (c *conn) takeWriteTurn() {
	if c.writing {
		c.wmu.Unlock()
		return
	}
	c.writing = true
	c.flushLocked()
	c.writing = false
	c.wmu.Unlock()
}

// flushLocked writes the queue until it stays empty. c.wmu is held on entry
// and on return, and c.writing is set by the caller.
func (c *conn) flushLocked() {
	for len(c.queue) > 0 {
		batch := c.queue
		c.queue = c.spare[:0]
		c.wmu.Unlock()
		c.writeBatch(batch)
		c.wmu.Lock()
		c.spare = batch[:0]
	}
}

func (c *conn) worker() {
	for j := range c.jobs {
		c.handle(j)
	}
}

func (c *conn) handle(j job) {
	s := c.s
	req := j.req
	var code uint32
	if req.Op == request.OpRead {
		code = c.read(req)
	} else {
		code = c.modifyAndReply(j)
	}
	if s.opts.Observe != nil {
		s.opts.Observe(request.Request{
			Conn: c.id, Op: req.Op, Flags: req.Flags, Offset: req.Offset, Length: req.Length,
			Start: j.start, Latency: time.Since(j.start), Error: code,
		})
	}
}

// modifyAndReply serves every request but READ and returns the NBD error
// it replied with.
func (c *conn) modifyAndReply(j job) uint32 {
	s := c.s
	req := j.req
	var err error
	if req.Op != request.OpFlush && (req.Offset > s.size || uint64(req.Length) > s.size-req.Offset) {
		err = syscall.EINVAL
	} else {
		if !s.caps.Parallel {
			s.serial.Lock()
		}
		err = c.modify(req, j.buf)
		if !s.caps.Parallel {
			s.serial.Unlock()
		}
	}
	if j.buf != nil {
		s.pool.put(j.buf)
	}
	code := ErrorCode(err)
	c.sendHeader(code, req.Cookie)
	return code
}

func (c *conn) modify(req RequestHeader, buf *buffer) error {
	s := c.s
	if s.caps.ReadOnly && req.Op != request.OpFlush {
		return sources.ErrReadOnly
	}
	off, n := int64(req.Offset), int64(req.Length)
	switch req.Op {
	case request.OpWrite:
		if _, err := s.src.WriteAt(buf.b, off); err != nil {
			return err
		}
		if req.Flags&request.FlagFUA != 0 {
			return s.src.Flush()
		}
		return nil
	case request.OpFlush:
		return s.src.Flush()
	case request.OpTrim:
		if err := s.src.Trim(off, n); err != nil {
			return err
		}
	case request.OpZero:
		if err := s.src.Zero(off, n, req.Flags&request.FlagNoHole == 0); err != nil {
			return err
		}
	default:
		return syscall.EINVAL
	}
	if req.Flags&request.FlagFUA != 0 {
		return s.src.Flush()
	}
	return nil
}

// read serves a READ and returns the NBD error it replied with.
func (c *conn) read(req RequestHeader) uint32 {
	s := c.s
	if req.Offset > s.size || uint64(req.Length) > s.size-req.Offset {
		c.sendHeader(errInval, req.Cookie)
		return errInval
	}
	if s.region != nil && c.raw != nil && req.Length > inlineMax {
		if fd, off, ok := s.region.RAMRegion(int64(req.Offset), int64(req.Length)); ok {
			f := outFrame{file: fileRegion{fd: fd, off: off, n: int(req.Length)}}
			PutReply(f.hdr[:], 0, req.Cookie)
			c.send(f)
			return 0
		}
	}
	buf := s.pool.get(ReplySize + int(req.Length))
	if !s.caps.Parallel {
		s.serial.Lock()
	}
	n, err := s.src.ReadAt(buf.b[ReplySize:], int64(req.Offset))
	if !s.caps.Parallel {
		s.serial.Unlock()
	}
	if n == int(req.Length) {
		err = nil // io.ReaderAt allows io.EOF with a full read at the end
	} else if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		s.pool.put(buf)
		code := ErrorCode(err)
		c.sendHeader(code, req.Cookie)
		return code
	}
	PutReply(buf.b, 0, req.Cookie)
	c.send(outFrame{buf: buf})
	return 0
}

// outFrame is one reply waiting to be written: a header-only reply (hdr),
// a READ reply whose header and data fill buf, which goes back to the pool
// once written, or a READ reply whose header is hdr and whose data is sent
// from file.
type outFrame struct {
	hdr  [ReplySize]byte
	buf  *buffer
	file fileRegion
}

// fileRegion is n bytes of the file fd from offset off; n is 0 for none.
type fileRegion struct {
	fd  int
	off int64
	n   int
}

func (c *conn) sendHeader(errCode uint32, cookie uint64) {
	var f outFrame
	PutReply(f.hdr[:], errCode, cookie)
	c.send(f)
}

// send queues one whole reply frame and writes the queue unless another
// worker is already writing it. Under load, replies that complete while a
// write is in progress go out together in one writev (fewer syscalls and
// kernel wake-ups); at queue depth 1 every reply is written at once. Frames
// never interleave.
func (c *conn) send(f outFrame) {
	c.wmu.Lock()
	c.queue = append(c.queue, f)
	if c.corked {
		c.wmu.Unlock()
		return
	}
	c.takeWriteTurn()
}

// writeBatch writes frames with one writev. Only the goroutine that set
// c.writing calls it, so c.iov and c.werr need no lock.
func (c *conn) writeBatch(batch []outFrame) {
	c.iov = c.iov[:0]
	for i := range batch {
		switch f := &batch[i]; {
		case f.buf != nil:
			c.iov = append(c.iov, f.buf.b)
		case f.file.n > 0:
			c.iov = append(c.iov, f.hdr[:])
			c.writeIovecs()
			c.sendFile(f.file)
		default:
			c.iov = append(c.iov, f.hdr[:])
		}
	}
	c.writeIovecs()
	for i := range batch {
		if batch[i].buf != nil {
			c.s.pool.put(batch[i].buf)
			batch[i].buf = nil
		}
	}
}

// writeIovecs writes and empties c.iov. After a write error nothing more is
// written: the connection is lost.
func (c *conn) writeIovecs() {
	if len(c.iov) == 0 {
		return
	}
	if c.werr == nil {
		var err error
		if c.raw != nil {
			err = c.raw.WriteBuffers(c.iov)
		} else if len(c.iov) == 1 {
			_, err = c.rw.Write(c.iov[0])
		} else {
			c.bufs = c.iov
			_, err = c.bufs.WriteTo(c.rw)
		}
		if err != nil {
			c.werr = err
			c.s.opts.Logf("nbd: writing reply: %v", err)
		}
	}
	c.iov = c.iov[:0]
}

// sendFile sends the data of a READ reply whose header is already written.
// If the file cannot supply it (it shrank under us), the reply cannot be
// turned into an error any more, so the connection is shut down: the
// kernel then fails or retries the request instead of taking short data as
// success.
func (c *conn) sendFile(r fileRegion) {
	if c.werr != nil {
		return
	}
	if err := c.raw.SendFile(r.fd, r.off, r.n); err != nil {
		c.werr = err
		c.s.opts.Logf("nbd: sending a READ reply from the source file: %v (closing the connection)", err)
		c.raw.Shutdown()
	}
}
