package nbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
)

type job struct {
	req   RequestHeader
	buf   *buffer   // WRITE payload
	start time.Time // header read; set only when observing
	// fail, when not 0, is the NBD error to reply with instead of
	// serving the request (one readLoop refused, its payload consumed).
	fail uint32
	// spliced: readLoop wrote the WRITE's payload into the source's file
	// itself (spliceWrite), with the error werr.
	spliced bool
	werr    error
}

type conn struct {
	s    *Server
	id   int // connection number, for request.Request.Conn
	rw   io.ReadWriter
	br   *bufio.Reader
	jobs chan job
	hdr  [ExtRequestSize]byte

	// What the handshake agreed (Session); all false for the kernel.
	structured bool // replies in chunks: structured replies or extended headers
	extended   bool // extended headers: 32-byte requests and chunk headers
	alloc      bool // base:allocation selected: BLOCK_STATUS is served
	chunks     chunkFormat
	// reqSize is the size of a request header: RequestSize, or
	// ExtRequestSize with extended headers.
	reqSize int
	// readHdr is the size of a successful READ reply's header:
	// ReplySize, dataChunkHeaderSize with structured replies,
	// extDataChunkHeaderSize with extended headers.
	readHdr int

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
	// The pipe WRITE payloads go through (spliceWrite), owned by readLoop:
	// its read and write ends, and its capacity (0: not made yet, -1:
	// cannot be).
	wpipe     [2]int
	wpipeSize int

	// Owned by the writing worker.
	iov    [][]byte
	joined []byte // writeJoined's copy of the replies; at most joinMax
	werr   error  // first reply write error
	// held is rw's transport when it can gather the TLS records of a
	// batch of replies into fewer writes (tlsTransport); nil otherwise.
	held holder
}

// holder is a transport that gathers what is written between Hold and
// Release, and writes it by Release at the latest.
type holder interface {
	Hold()
	Release() error
}

// readLoop reads requests until the peer sends DISC or closes its end
// (nil) or breaks the protocol. Small requests to an InMemory source it
// serves itself, in order; the others go to the workers.
func (c *conn) readLoop() error {
	s := c.s
	inMemory := s.caps.InMemory
	corked := false
	holes := c.newHoleReader()
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
		if inMemory && c.br.Buffered() < c.reqSize {
			uncork()
		}
		req, ok, err := c.readRequest()
		if !ok {
			return err
		}
		j := job{req: req}
		if s.opts.Observe != nil {
			j.start = time.Now()
		}
		if req.Op == request.OpDisc {
			s.disc.Store(true)
			return nil
		}
		payload, err := c.checkRequest(&j)
		if err != nil {
			return err
		}
		if payload {
			if inMemory && c.br.Buffered() < int(req.Length) {
				uncork()
			}
			spliced, err := c.spliceWrite(&j)
			if err != nil {
				return err
			}
			if !spliced {
				j.buf = s.pool.get(int(req.Length))
				if _, err := io.ReadFull(c.br, j.buf.b); err != nil {
					s.pool.put(j.buf)
					return fmt.Errorf("%w: connection closed inside a %v payload: %v", ErrProtocol, req.Op, err)
				}
			}
		}
		if inMemory && (req.Length <= inlineMax || j.spliced) {
			if !corked {
				c.wmu.Lock()
				c.corked = true
				c.wmu.Unlock()
				corked = true
			}
			c.handle(j, holes)
			continue
		}
		c.jobs <- j
	}
}

// checkRequest checks the lengths of a request before its payload is read
// and reports whether a payload follows the header. A READ or WRITE over
// MaxPayload breaks the protocol, and so does any payload over it; with
// extended headers a payload that the command does not take (any but a
// WRITE's, NBD_CMD_FLAG_PAYLOAD_LEN) is read and the request refused with
// EINVAL, as is a WRITE without one, and a READ over MaxPayload, which
// carries no payload, is refused with EOVERFLOW instead (j.fail).
func (c *conn) checkRequest(j *job) (payload bool, err error) {
	req := &j.req
	if !c.extended {
		switch req.Op {
		case request.OpRead, request.OpWrite:
			if req.Length > MaxPayload {
				return false, fmt.Errorf("%w: %v of %d bytes is over the %d byte limit", ErrProtocol, req.Op, req.Length, MaxPayload)
			}
		}
		return req.Op == request.OpWrite, nil
	}
	payload = req.Flags&request.FlagPayloadLen != 0
	switch {
	case payload && req.Length > MaxPayload:
		return false, fmt.Errorf("%w: %v with a payload of %d bytes, over the %d byte limit", ErrProtocol, req.Op, req.Length, MaxPayload)
	case payload != (req.Op == request.OpWrite):
		j.fail = errInval
	case req.Op == request.OpRead && req.Length > MaxPayload:
		j.fail = errOverflow
	}
	return payload, nil
}

// readRequest reads and parses the next request header. It returns false,
// with no error if the peer closed its end between requests.
func (c *conn) readRequest() (RequestHeader, bool, error) {
	if _, err := io.ReadFull(c.br, c.hdr[:c.reqSize]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return RequestHeader{}, false, nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return RequestHeader{}, false, fmt.Errorf("%w: connection closed inside a request header", ErrProtocol)
		}
		return RequestHeader{}, false, fmt.Errorf("reading request: %w", err)
	}
	var req RequestHeader
	var err error
	if c.extended {
		req, err = ParseExtendedRequest(c.hdr[:])
	} else {
		req, err = ParseRequest(c.hdr[:])
	}
	if err != nil {
		return RequestHeader{}, false, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return req, true, nil
}

// inlineMax is the largest request an InMemory source serves on the reading
// goroutine. Small requests cost less than the hand-off to a worker
// (BenchmarkServerInlineRead4K); copying megabytes is better spread over
// the cores (BenchmarkServerRead1M). Figures: docs/performance.md.
const inlineMax = 128 << 10

func (c *conn) worker() {
	h := c.newHoleReader()
	for j := range c.jobs {
		c.handle(j, h)
	}
}

// newHoleReader returns a holeReader for a goroutine that serves requests,
// or nil when READ replies are never split (simple replies).
func (c *conn) newHoleReader() *holeReader {
	if !c.structured {
		return nil
	}
	return newHoleReader()
}
