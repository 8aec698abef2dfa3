package nbd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

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
	lender lender      // src, when its READ replies can be written from its memory
	piper  piper       // src, when its READ replies can come through a pipe
	// wregion is src when WRITE payloads can go into its file through a pipe.
	wregion ramWriteRegioner
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
	s.lender, _ = src.(lender)
	s.piper, _ = src.(piper)
	s.wregion, _ = src.(ramWriteRegioner)
	return s
}

// piper is a source that can put the bytes of a READ into pipes without
// their passing through the server's memory (an object on a plain HTTP
// server: splice(2) from the answer's connection). PipeRead returns the
// read ends of pipes that hold exactly the n bytes at off, in order, and
// release, to be called once, after the reply is written (or not: the
// pipes may still hold bytes then); fds is not used after it. ok is false
// when the source does not serve this READ so, or failed to: the server
// then serves it as any other READ. The reply's data goes from the pipes
// to the socket with splice(2).
type piper interface {
	PipeRead(off, n int64) (fds []int, release func(), ok bool)
}

// lender is a source that keeps its bytes in memory of its own (a block
// cache) and lends them for READ replies larger than inlineMax: the reply
// is written from them with writev instead of being copied into a buffer
// first. Lend returns the n bytes at off as slices that stay unchanged
// until release is called, once the reply is written; the server calls
// it exactly once and never modifies the slices.
type lender interface {
	Lend(off, n int64) (bufs [][]byte, release func(), err error)
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
	return s.serve(ctx, rw, id, Session{})
}

// Session is what a network client agreed to in the handshake: the export
// it chose and the extensions it negotiated for the transmission phase.
// The zero Session (no export aside) is how the kernel is served: simple
// replies only.
type Session struct {
	Export *Export
	// StructuredReplies is set when the client negotiated
	// NBD_OPT_STRUCTURED_REPLY: READ and BLOCK_STATUS replies are then
	// structured, READ data
	// in one NBD_REPLY_TYPE_OFFSET_DATA chunk (or, where the Source's
	// extents report holes or zeros and NBD_CMD_FLAG_DF is not set, in
	// data chunks and NBD_REPLY_TYPE_OFFSET_HOLE chunks), errors in an
	// error chunk
	// (NBD_REPLY_TYPE_ERROR_OFFSET for a READ that failed, at the offset
	// where it failed); the other requests' successes get simple
	// replies, as the protocol allows (and nbdkit and qemu-nbd do).
	StructuredReplies bool
	// BaseAllocation is set when the client selected the base:allocation
	// metadata context for Export (NBD_OPT_SET_META_CONTEXT): it may
	// then send NBD_CMD_BLOCK_STATUS, answered from the Source's extents
	// (sources.Extents). It implies StructuredReplies or
	// ExtendedHeaders.
	BaseAllocation bool
	// ExtendedHeaders is set when the client negotiated
	// NBD_OPT_EXTENDED_HEADERS: requests have 32-byte headers with 64-bit
	// lengths (a WRITE's payload flagged NBD_CMD_FLAG_PAYLOAD_LEN), and
	// every reply is made of 32-byte extended chunks, as structured
	// replies are, block status in NBD_REPLY_TYPE_BLOCK_STATUS_EXT.
	ExtendedHeaders bool
}

// Serve serves the session's transmission phase on rw, the connection
// numbered id, with the export's Server; see Server.ServeConn.
func (ss Session) Serve(ctx context.Context, rw io.ReadWriter, id int) error {
	return ss.Export.Server.serve(ctx, rw, id, ss)
}

func (s *Server) serve(ctx context.Context, rw io.ReadWriter, id int, ss Session) error {
	c := &conn{
		s:          s,
		id:         id,
		rw:         rw,
		jobs:       make(chan job, 128),
		structured: ss.StructuredReplies || ss.ExtendedHeaders,
		extended:   ss.ExtendedHeaders,
		chunks:     chunkFormat{ext: ss.ExtendedHeaders},
		reqSize:    RequestSize,
		readHdr:    ReplySize,
	}
	c.alloc = c.structured && ss.BaseAllocation
	switch {
	case c.extended:
		c.reqSize, c.readHdr = ExtRequestSize, extDataChunkHeaderSize
	case c.structured:
		c.readHdr = dataChunkHeaderSize
	}
	var in io.Reader = rw
	if sc, ok := rw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = newRawSocket(rc)
			in = c.raw
		}
	}
	c.br = bufio.NewReaderSize(in, 256<<10)
	if nc, ok := rw.(interface{ NetConn() net.Conn }); ok {
		c.held, _ = nc.NetConn().(holder)
	}
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
	c.closePipe()
	close(stop)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		s.opts.Logf("nbd: closing connection: %v", err)
	}
	return err
}
