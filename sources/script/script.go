package script

import (
	"errors"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

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

// Open runs the program at path (resolved to an absolute path, so that
// later calls do not depend on the working directory) through its open
// sequence and returns the Source.
func Open(path string, opts Options) (*Source, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil, &os.PathError{Op: "exec", Path: abs, Err: syscall.EACCES}
	}
	keepDescriptors()
	tmpdir, err := os.MkdirTemp("", "nbdloop-script-")
	if err != nil {
		return nil, fmt.Errorf("creating $tmpdir: %w", err)
	}
	mark := newMark()
	env := append(programEnv(opts.Env), "tmpdir="+tmpdir, markVar+"="+mark)
	s := &Source{path: abs, persistent: opts.Persistent, tmpdir: tmpdir, mark: mark}
	if opts.Persistent {
		logf := opts.Logf
		if logf == nil {
			logf = log.Printf
		}
		args := make([]string, len(opts.Params))
		for i, p := range opts.Params {
			args[i] = p.String()
		}
		s.c = &persistentCaller{path: abs, args: args, env: env, timeout: opts.timeout(), logf: logf}
	} else {
		s.c = &execCaller{path: abs, env: env, timeout: opts.timeout()}
	}
	if err := s.open(opts); err != nil {
		s.c.close()
		os.RemoveAll(tmpdir)
		return nil, err
	}
	return s, nil
}

// keepDescriptors marks every descriptor from 3 up close-on-exec, so that
// programs get only their stdin, stdout and stderr. Descriptors that Go
// opens are close-on-exec already, but one inherited without the flag (the
// server's report pipe to attach, say) would otherwise stay open in every
// program, and a persistent one holding the write end of a pipe keeps its
// reader from ever seeing end of file: attach hung that way. Files passed
// on purpose to children with exec.Cmd.ExtraFiles are unaffected (they are
// dup'ed into place in the child).
func keepDescriptors() {
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return
	}
	// Before Linux 5.11: one descriptor at a time.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3 {
			unix.CloseOnExec(fd)
		}
	}
}

// open runs nbdkit's open sequence (nbdkit mode) and asks the size and
// capabilities.
func (s *Source) open(opts Options) error {
	ro := strconv.FormatBool(opts.ReadOnly)
	if !s.persistent {
		if err := s.setup(opts); err != nil {
			return err
		}
		var parallel bool
		for _, step := range [][]string{
			{"thread_model"}, {"get_ready"}, {"after_fork"}, {"preconnect", ro}, {"open", ro, "", "false"},
		} {
			r := s.c.call(step, nil, nil)
			switch {
			case r.status == statusError:
				return r.err
			case r.status == statusFalse:
				return s.unexpected(step[0], "3 (false)")
			case r.status == statusOK && step[0] == "thread_model":
				parallel = strings.EqualFold(strings.TrimSpace(r.out), "parallel")
			case r.status == statusOK && step[0] == "open":
				s.handle = []string{strings.TrimSuffix(r.out, "\n")}
			case step[0] == "open":
				s.handle = []string{""}
			}
		}
		s.caps.Parallel = parallel
	}

	r := s.call("get_size", nil, nil)
	switch r.status {
	case statusError:
		return r.err
	case statusMissing:
		return fmt.Errorf("%s: the get_size method is required (it prints the size in bytes)", s.path)
	case statusFalse:
		return s.unexpected("get_size", "3 (false)")
	}
	size, err := parseSize(r.out)
	if err != nil {
		return fmt.Errorf("%s get_size: %w", s.path, err)
	}
	if size == 0 {
		return fmt.Errorf("%s get_size: %w", s.path, sources.ErrEmpty)
	}
	s.size = size

	ask := func(method string) (bool, error) {
		r := s.call(method, nil, nil)
		if r.status == statusError {
			return false, r.err
		}
		return r.status == statusOK, nil
	}
	canWrite := false
	if !opts.ReadOnly {
		if canWrite, err = ask("can_write"); err != nil {
			return err
		}
	}
	for _, q := range []struct {
		method string
		v      *bool
	}{
		{"can_flush", &s.canFlush}, {"can_trim", &s.canTrim}, {"can_zero", &s.canZero}, {"is_rotational", &s.caps.Rotational},
	} {
		if *q.v, err = ask(q.method); err != nil {
			return err
		}
	}
	r = s.call("block_size", nil, nil)
	switch r.status {
	case statusError:
		return r.err
	case statusOK:
		if s.blockSizes, err = parseBlockSizes(r.out); err != nil {
			return fmt.Errorf("%s block_size: %w", s.path, err)
		}
	}
	ro2 := !canWrite
	s.caps.ReadOnly = ro2
	s.caps.Flush = s.canFlush && !ro2
	s.caps.Trim = s.canTrim && !ro2
	s.caps.Zero = s.canZero && !ro2
	return nil
}

// setup runs load, the config calls and config_complete.
func (s *Source) setup(opts Options) error {
	if r := s.c.call([]string{"load"}, nil, nil); r.status == statusError {
		return r.err
	}
	magic := ""
	for _, p := range opts.Params {
		key := p.Key
		if key == "" {
			if magic == "" {
				r := s.c.call([]string{"magic_config_key"}, nil, nil)
				if r.status == statusError {
					return r.err
				}
				magic = strings.TrimSpace(r.out)
				if r.status != statusOK || magic == "" {
					return fmt.Errorf("%s: option %q has no KEY= and the script prints no magic_config_key (write KEY=VALUE)", s.path, p.Value)
				}
			}
			key = magic
		}
		r := s.c.call([]string{"config", key, p.Value}, nil, nil)
		switch r.status {
		case statusError:
			return r.err
		case statusMissing:
			return fmt.Errorf("%s: the script takes no options (it has no config method), but %s was given", s.path, p)
		case statusFalse:
			return s.unexpected("config", "3 (false)")
		}
	}
	r := s.c.call([]string{"config_complete"}, nil, nil)
	switch r.status {
	case statusError:
		return r.err
	case statusFalse:
		return s.unexpected("config_complete", "3 (false)")
	}
	return nil
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
