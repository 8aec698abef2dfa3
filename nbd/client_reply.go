package nbd

import (
	"encoding/binary"
	"fmt"
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
