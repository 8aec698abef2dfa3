package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/nbdloop/nbdloop/internal/request"
)

// parseClientReply decodes a simple reply header for the client; a
// structured reply (not negotiated) or any other magic breaks the
// connection.
func parseClientReply(b []byte) (Reply, error) {
	r, err := ParseReply(b)
	if err != nil {
		if len(b) >= 4 && binary.BigEndian.Uint32(b) == structuredReplyMagic {
			return Reply{}, fmt.Errorf("%w: %w: a structured reply, which was not negotiated", ErrConnLost, ErrProtocol)
		}
		return Reply{}, fmt.Errorf("%w: %w: %w", ErrConnLost, ErrProtocol, err)
	}
	return r, nil
}

// ReplyError is a server's error reply to a request.
type ReplyError struct {
	Op request.Op
	// Code is the NBD error value the server sent.
	Code uint32
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("nbd: the server failed %v: %v", e.Op, e.Errno())
}

// Errno is the error value as a syscall.Errno: the protocol's values are
// Linux's; a value the protocol does not define is EIO.
func (e *ReplyError) Errno() syscall.Errno {
	switch e.Code {
	case errPerm, errIO, errNoMem, errInval, errNoSpc, errOverflow, errNotSup, errShutdown:
		return syscall.Errno(e.Code)
	}
	return syscall.EIO
}

// Unwrap returns the Errno, so that errors.As finds it (and the nbdloop
// server sends the same error on to its own client).
func (e *ReplyError) Unwrap() error { return e.Errno() }

// replyError is the outcome of a reply with error value code to op: nil,
// a *ReplyError, or for NBD_ESHUTDOWN (the server is going away) an error
// wrapping ErrConnLost too.
func replyError(op request.Op, code uint32) error {
	if code == 0 {
		return nil
	}
	err := &ReplyError{Op: op, Code: code}
	if code == errShutdown {
		return fmt.Errorf("%w: %w", ErrConnLost, err)
	}
	return err
}

// maxErrorChunk bounds the payload of an error chunk the client reads: the
// error, a message of MaxNameLength and an offset.
const maxErrorChunk = 6 + MaxNameLength + 8

// extendedReply handles one extended reply chunk whose header is hdr: a
// READ's data goes into the request's buffer, a hole clears it, an error
// is kept, and the chunk flagged NBD_REPLY_FLAG_DONE completes the
// request. Anything the protocol forbids (a chunk for no request in
// flight, another offset than the request's, content outside the READ
// or for another request, a READ not covered when it is done, unknown
// chunk types) breaks the connection.
func (c *Client) extendedReply(hdr []byte) error {
	h, err := ParseExtChunkHeader(hdr)
	if err != nil {
		if len(hdr) >= 4 && binary.BigEndian.Uint32(hdr) == replyMagic {
			err = errors.New("a simple reply, which extended headers forbid")
		}
		return fmt.Errorf("%w: %w: %w", ErrConnLost, ErrProtocol, err)
	}
	c.mu.Lock()
	cl := c.calls[h.Cookie]
	c.mu.Unlock()
	switch {
	case cl == nil:
		return fmt.Errorf("%w: %w: a reply with cookie %#x, which no request in flight has", ErrConnLost, ErrProtocol, h.Cookie)
	case h.Offset != cl.off:
		return fmt.Errorf("%w: %w: a reply to the %v at %d says offset %d", ErrConnLost, ErrProtocol, cl.op, cl.off, h.Offset)
	}
	if err := c.chunk(cl, h); err != nil {
		return fmt.Errorf("%w: %w: %v reply: %w", ErrConnLost, ErrProtocol, cl.op, err)
	}
	if h.Flags&ReplyFlagDone == 0 {
		return nil
	}
	if cl.code == 0 && cl.op == request.OpRead && cl.covered != uint64(len(cl.data)) {
		return fmt.Errorf("%w: %w: a READ of %d bytes done with %d of them sent", ErrConnLost, ErrProtocol, len(cl.data), cl.covered)
	}
	if cl.code == 0 && cl.op == request.OpBlockStatus && len(cl.exts) == 0 {
		return fmt.Errorf("%w: %w: a block status reply without descriptors", ErrConnLost, ErrProtocol)
	}
	c.mu.Lock()
	delete(c.calls, h.Cookie)
	c.mu.Unlock()
	cl.done <- replyError(cl.op, cl.code)
	return nil
}

// chunk reads the payload of one chunk of cl's reply and records it.
func (c *Client) chunk(cl *call, h ExtChunkHeader) error {
	switch {
	case h.Type == ReplyTypeNone:
		if h.Length != 0 || h.Flags&ReplyFlagDone == 0 {
			return fmt.Errorf("NBD_REPLY_TYPE_NONE with %d bytes of payload, flags %#x", h.Length, h.Flags)
		}
		return nil
	case h.Type&(1<<15) != 0:
		return c.errorChunk(cl, h)
	case h.Type == ReplyTypeBlockStatusExt:
		return c.blockStatusChunk(cl, h)
	case cl.op != request.OpRead || h.Type != ReplyTypeOffsetData && h.Type != ReplyTypeOffsetHole:
		return fmt.Errorf("a chunk of type %d", h.Type)
	case h.Type == ReplyTypeOffsetHole && h.Length != 12, h.Type == ReplyTypeOffsetData && (h.Length < 9 || h.Length-8 > uint64(len(cl.data))):
		return fmt.Errorf("a chunk of type %d with %d bytes of payload", h.Type, h.Length)
	}
	var b [12]byte
	head := b[:8] // the offset; a hole's size follows it
	if h.Type == ReplyTypeOffsetHole {
		head = b[:12]
	}
	if _, err := io.ReadFull(c.br, head); err != nil {
		return err
	}
	off := binary.BigEndian.Uint64(b[0:8])
	n := h.Length - 8
	if h.Type == ReplyTypeOffsetHole {
		n = uint64(binary.BigEndian.Uint32(b[8:12]))
	}
	rel := off - cl.off
	if off < cl.off || n == 0 || rel > uint64(len(cl.data)) || n > uint64(len(cl.data))-rel || n > uint64(len(cl.data))-cl.covered {
		return fmt.Errorf("content of %d bytes at %d, outside the READ of %d at %d or past what it has left", n, off, len(cl.data), cl.off)
	}
	cl.covered += n
	dst := cl.data[rel : rel+n]
	if h.Type == ReplyTypeOffsetHole {
		clear(dst)
		return nil
	}
	_, err := io.ReadFull(c.br, dst)
	return err
}

// errorChunk reads an error chunk for cl and keeps the first error value.
func (c *Client) errorChunk(cl *call, h ExtChunkHeader) error {
	if h.Length < 6 || h.Length > maxErrorChunk {
		return fmt.Errorf("an error chunk of %d bytes", h.Length)
	}
	if cap(c.scratch) < maxErrorChunk {
		c.scratch = make([]byte, maxErrorChunk)
	}
	b := c.scratch[:h.Length]
	if _, err := io.ReadFull(c.br, b); err != nil {
		return err
	}
	code := binary.BigEndian.Uint32(b[0:4])
	msg := uint64(binary.BigEndian.Uint16(b[4:6]))
	switch {
	case code == 0:
		return errors.New("an error chunk with error value 0")
	case msg > h.Length-6, h.Type == ReplyTypeErrorOffset && msg+14 != h.Length:
		return fmt.Errorf("an error chunk of %d bytes with a message of %d", h.Length, msg)
	}
	if cl.code == 0 {
		cl.code = code
	}
	return nil
}
