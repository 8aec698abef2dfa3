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
}

type conn struct {
	s    *Server
	id   int // connection number, for request.Request.Conn
	rw   io.ReadWriter
	br   *bufio.Reader
	jobs chan job
	hdr  [RequestSize]byte

	// What the handshake agreed (Session); all false for the kernel.
	structured bool // structured replies
	alloc      bool // base:allocation selected: BLOCK_STATUS is served
	// readHdr is the size of a successful READ reply's header:
	// ReplySize, or dataChunkHeaderSize with structured replies.
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

	// Owned by the writing worker.
	iov    [][]byte
	joined []byte // writeJoined's copy of the replies; at most joinMax
	werr   error  // first reply write error
}

// readLoop reads requests until the peer sends DISC or closes its end
// (nil) or breaks the protocol. Small requests to an InMemory source it
// serves itself, in order; the others go to the workers.
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
		req, ok, err := c.readRequest()
		if !ok {
			return err
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

// readRequest reads and parses the next request header. It returns false,
// with no error if the peer closed its end between requests.
func (c *conn) readRequest() (RequestHeader, bool, error) {
	if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return RequestHeader{}, false, nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return RequestHeader{}, false, fmt.Errorf("%w: connection closed inside a request header", ErrProtocol)
		}
		return RequestHeader{}, false, fmt.Errorf("reading request: %w", err)
	}
	req, err := ParseRequest(c.hdr[:])
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
	for j := range c.jobs {
		c.handle(j)
	}
}
