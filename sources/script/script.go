package script

import (
	"errors"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/nbdloop/nbdloop/sources"
)

// caller runs one method of the program: args[0] is the method name. See
// execCaller.call.
type caller interface {
	call(args []string, in, dst []byte) reply
	close() error
}

// maxChunk bounds the count of one call: nbdkit passes counts as 32-bit
// numbers, so larger requests are split.
const maxChunk = 1 << 30

// zeroChunk is the size of the writes that emulate zero.
const zeroChunk = 1 << 20

// Source serves the bytes a program reads and writes (see the package
// documentation).
type Source struct {
	path       string
	persistent bool
	c          caller
	handle     []string // nbdkit mode: the HANDLE argument; persistent: none
	tmpdir     string
	mark       string // markVar of its programs
	size       int64
	caps       sources.Caps
	canFlush   bool
	canTrim    bool
	canZero    bool
	blockSizes BlockSizes

	closeOnce sync.Once
	closeErr  error
}

func (s *Source) unexpected(method, what string) error {
	return &Error{Script: s.path, Method: method, Errno: syscall.EIO, Msg: "unexpected status " + what}
}

// call calls method with the handle (nbdkit mode) and args.
func (s *Source) call(method string, in, dst []byte, args ...string) reply {
	a := make([]string, 0, 1+len(s.handle)+len(args))
	a = append(append(append(a, method), s.handle...), args...)
	return s.c.call(a, in, dst)
}

// data calls a method that takes COUNT OFFSET [FLAGS], in chunks of at most
// maxChunk bytes; in and dst are the whole stdin data or stdout buffer.
func (s *Source) data(method string, off, length int64, flags []string, in, dst []byte) reply {
	for done := int64(0); done < length; {
		n := min(length-done, maxChunk)
		args := append([]string{strconv.FormatInt(n, 10), strconv.FormatInt(off+done, 10)}, flags...)
		var cin, cdst []byte
		if in != nil {
			cin = in[done : done+n]
		}
		if dst != nil {
			cdst = dst[done : done+n]
		}
		if r := s.call(method, cin, cdst, args...); r.status != statusOK {
			return r
		}
		done += n
	}
	return reply{status: statusOK}
}

// result turns the reply to a data method into an error: a missing method
// or false are errors too.
func (s *Source) result(method string, r reply) error {
	switch r.status {
	case statusOK:
		return nil
	case statusError:
		return r.err
	case statusMissing:
		return &Error{Script: s.path, Method: method, Errno: syscall.EIO, Msg: "method not provided (status 2)"}
	}
	return s.unexpected(method, strconv.Itoa(r.status))
}

// ReadAt calls pread.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if err := sources.CheckRange(off, int64(len(p)), s.size); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.result("pread", s.data("pread", off, int64(len(p)), nil, nil, p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt calls pwrite.
func (s *Source) WriteAt(p []byte, off int64) (int, error) {
	if s.caps.ReadOnly {
		return 0, sources.ErrReadOnly
	}
	if err := sources.CheckRange(off, int64(len(p)), s.size); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.result("pwrite", s.data("pwrite", off, int64(len(p)), s.flags(""), p, nil)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flags returns the FLAGS argument: always present in nbdkit mode (maybe
// empty), left out of the request line when empty in persistent mode.
func (s *Source) flags(f string) []string {
	if f == "" && s.persistent {
		return nil
	}
	return []string{f}
}

// Flush calls flush when can_flush said yes.
func (s *Source) Flush() error {
	if !s.caps.Flush {
		return nil
	}
	r := s.call("flush", nil, nil)
	if r.status == statusMissing {
		return nil
	}
	return s.result("flush", r)
}

// Trim calls trim when can_trim said yes.
func (s *Source) Trim(off, length int64) error {
	if s.caps.ReadOnly {
		return sources.ErrReadOnly
	}
	if err := sources.CheckRange(off, length, s.size); err != nil {
		return err
	}
	if length == 0 || !s.caps.Trim {
		return nil
	}
	r := s.data("trim", off, length, s.flags(""), nil, nil)
	if r.status == statusMissing {
		return nil
	}
	return s.result("trim", r)
}

// Zero calls zero when can_zero said yes, and writes zeros with pwrite
// when it did not, when zero is missing or when it fails with ENOTSUP or
// EOPNOTSUPP.
func (s *Source) Zero(off, length int64, mayTrim bool) error {
	if s.caps.ReadOnly {
		return sources.ErrReadOnly
	}
	if err := sources.CheckRange(off, length, s.size); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if s.caps.Zero {
		f := ""
		if mayTrim {
			f = "may_trim"
		}
		r := s.data("zero", off, length, s.flags(f), nil, nil)
		var errno syscall.Errno
		fallback := r.status == statusMissing ||
			r.status == statusError && errors.As(r.err, &errno) && errno == syscall.EOPNOTSUPP
		if !fallback {
			return s.result("zero", r)
		}
	}
	zeros := make([]byte, min(length, zeroChunk))
	for done := int64(0); done < length; {
		n := min(length-done, int64(len(zeros)))
		if err := s.result("pwrite", s.data("pwrite", off+done, n, s.flags(""), zeros[:n], nil)); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// Size is what get_size printed.
func (s *Source) Size() int64 { return s.size }

// Caps come from can_write (and Options.ReadOnly), can_flush, can_trim,
// can_zero, is_rotational and, in nbdkit mode, thread_model.
func (s *Source) Caps() sources.Caps { return s.caps }

// BlockSizes are what block_size printed (zeros if it is missing).
func (s *Source) BlockSizes() BlockSizes { return s.blockSizes }

// Persistent reports whether the program runs in persistent mode.
func (s *Source) Persistent() bool { return s.persistent }

// Close flushes (when can_flush), calls close and unload in nbdkit mode or
// ends a persistent program, and removes $tmpdir. It returns the flush's
// error; a second Close returns nil.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.Flush()
		if !s.persistent {
			s.call("close", nil, nil)
			s.c.call([]string{"unload"}, nil, nil)
		}
		s.c.close()
		killMarked(markVar, s.mark)
		os.RemoveAll(s.tmpdir)
	})
	return s.closeErr
}
