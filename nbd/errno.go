package nbd

import (
	"errors"
	"syscall"
)

// NBD error values (doc/proto.md "Error values"). They happen to equal the
// Linux errno values, but the protocol defines only these.
const (
	errPerm     = 1   // NBD_EPERM
	errIO       = 5   // NBD_EIO
	errNoMem    = 12  // NBD_ENOMEM
	errInval    = 22  // NBD_EINVAL
	errNoSpc    = 28  // NBD_ENOSPC
	errOverflow = 75  // NBD_EOVERFLOW
	errNotSup   = 95  // NBD_ENOTSUP
	errShutdown = 108 // NBD_ESHUTDOWN
)

// ErrorCode is the one place where errors from sources become NBD error
// values. It looks for a syscall.Errno anywhere in err's chain; anything the
// protocol cannot express, or an error without an errno, becomes EIO. The
// Linux driver turns every non-zero value into EIO for its caller anyway, but
// the value still shows in the kernel log and in other clients.
func ErrorCode(err error) uint32 {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return errIO
	}
	switch errno {
	case syscall.EPERM, syscall.EROFS, syscall.EACCES:
		return errPerm
	case syscall.ENOMEM:
		return errNoMem
	case syscall.EINVAL:
		return errInval
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
		return errNoSpc
	case syscall.EOVERFLOW:
		return errOverflow
	case syscall.ENOTSUP:
		return errNotSup
	case syscall.ESHUTDOWN:
		return errShutdown
	}
	return errIO
}
