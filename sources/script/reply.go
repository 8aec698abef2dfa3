package script

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// reply is the outcome of one call of the program (or one request to a
// persistent one): status is statusOK, statusMissing, statusFalse, or
// statusError with err set.
type reply struct {
	status int
	out    string // stdout (nbdkit mode) or the status line's value (persistent)
	err    error  // *Error when status is statusError
}

// ioError is the reply to a call that failed on nbdloop's side of the
// program (a bad argument, a pipe, a timeout, a broken protocol): an
// *Error with EIO and the message format makes of a.
func ioError(script, method, format string, a ...any) reply {
	return reply{status: statusError, err: &Error{Script: script, Method: method, Errno: syscall.EIO, Msg: fmt.Sprintf(format, a...)}}
}

// statusReply is the reply to a call whose program answered code other
// than statusOK: statusMissing and statusFalse as they are; any other code
// an *Error with the errno and message the program gave in text (its
// stderr, or the rest of its status line), or, when text gives none, EIO
// and the message noMsg makes of the code (a format with one %d).
func statusReply(script, method string, code int, text []byte, noMsg string) reply {
	switch code {
	case statusMissing, statusFalse:
		return reply{status: code}
	}
	errno, msg := parseFailure(text)
	if msg == "" {
		msg = fmt.Sprintf(noMsg, code)
	}
	return reply{status: statusError, err: &Error{Script: script, Method: method, Errno: errno, Msg: msg}}
}

// isTimeout reports whether err is a read or write on a program's pipe
// that its deadline ended.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
