package script

import (
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

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
	s := &Source{path: abs, persistent: opts.Persistent, tmpdir: tmpdir, mark: mark, c: newCaller(abs, env, opts)}
	if err := s.open(opts); err != nil {
		s.c.close()
		os.RemoveAll(tmpdir)
		return nil, err
	}
	return s, nil
}

// newCaller returns the caller of opts' mode for the program at path,
// which runs with env.
func newCaller(path string, env []string, opts Options) caller {
	if !opts.Persistent {
		return &execCaller{path: path, env: env, timeout: opts.timeout()}
	}
	logf := opts.Logf
	if logf == nil {
		logf = log.Printf
	}
	args := make([]string, len(opts.Params))
	for i, p := range opts.Params {
		args[i] = p.String()
	}
	return &persistentCaller{path: path, args: args, env: env, timeout: opts.timeout(), logf: logf}
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
	if !s.persistent {
		if err := s.setup(opts); err != nil {
			return err
		}
		if err := s.openHandle(opts.ReadOnly); err != nil {
			return err
		}
	}
	if err := s.askSize(); err != nil {
		return err
	}
	return s.askCaps(opts.ReadOnly)
}

// openHandle runs thread_model, get_ready, after_fork, preconnect and
// open, which gives the HANDLE.
func (s *Source) openHandle(readOnly bool) error {
	ro := strconv.FormatBool(readOnly)
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
	return nil
}

// askSize calls get_size, which is required.
func (s *Source) askSize() error {
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
	return nil
}

// askCaps calls can_write (unless readOnly), can_flush, can_trim,
// can_zero, is_rotational and block_size, and sets the capabilities.
func (s *Source) askCaps(readOnly bool) error {
	ask := func(method string) (bool, error) {
		r := s.call(method, nil, nil)
		if r.status == statusError {
			return false, r.err
		}
		return r.status == statusOK, nil
	}
	var err error
	canWrite := false
	if !readOnly {
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
	r := s.call("block_size", nil, nil)
	switch r.status {
	case statusError:
		return r.err
	case statusOK:
		if s.blockSizes, err = parseBlockSizes(r.out); err != nil {
			return fmt.Errorf("%s block_size: %w", s.path, err)
		}
	}
	ro := !canWrite
	s.caps.ReadOnly = ro
	s.caps.Flush = s.canFlush && !ro
	s.caps.Trim = s.canTrim && !ro
	s.caps.Zero = s.canZero && !ro
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
