package script

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Bounds on what is read from a program, so that no output can make the
// server allocate without limit or wait forever.
const (
	maxOutput = 64 << 10 // stdout of methods other than pread
	maxStderr = 4 << 10  // kept from stderr; the rest is read and dropped
)

// execCaller runs the program once per call: nbdkit's sh plugin
// convention.
type execCaller struct {
	path    string
	env     []string
	timeout time.Duration
}

// reply is the outcome of one call of the program (or one request to a
// persistent one): status is statusOK, statusMissing, statusFalse, or
// statusError with err set.
type reply struct {
	status int
	out    string // stdout (nbdkit mode) or the status line's value (persistent)
	err    error  // *Error when status is statusError
}

// call runs `path args...` with in on its stdin (nil: /dev/null). With dst
// set (pread), stdout must be exactly len(dst) bytes and goes into dst;
// otherwise stdout, up to maxOutput bytes, is reply.out.
func (c *execCaller) call(args []string, in, dst []byte) reply {
	method := args[0]
	fail := func(format string, a ...any) reply {
		return reply{status: statusError, err: &Error{Script: c.path, Method: method, Errno: syscall.EIO, Msg: fmt.Sprintf(format, a...)}}
	}
	for _, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return fail("argument %q contains a NUL byte", cleanMsg([]byte(a)))
		}
	}
	p, err := c.start(args, in != nil)
	if err != nil {
		return fail("%v", err)
	}
	deadline := time.Now().Add(c.timeout)
	p.setDeadline(deadline)

	inDone := make(chan struct{})
	if in != nil {
		go func() {
			defer close(inDone)
			// A program that exits without reading its input makes this
			// fail with EPIPE; as in nbdkit only the exit status counts.
			p.stdin.Write(in)
			p.stdin.Close()
		}()
	} else {
		close(inDone)
	}
	errDone := make(chan []byte, 1)
	go func() {
		b, _ := readBounded(p.stderr, maxStderr, true)
		errDone <- b
	}()
	// finish waits for the helpers, which end by the deadline at the
	// latest, then releases our pipe ends.
	finish := func() []byte {
		<-inDone
		b := <-errDone
		p.closePipes()
		return b
	}

	// stdout first: the program may not exit before its output is read.
	var out []byte
	var outErr error
	short := -1 // pread: bytes received when fewer than len(dst)
	if dst != nil {
		n, err := io.ReadFull(p.stdout, dst)
		switch {
		case err == nil:
			var extra [1]byte
			if k, err := p.stdout.Read(extra[:]); k > 0 {
				outErr = fmt.Errorf("printed more than the %d bytes asked for", len(dst))
			} else if err != io.EOF {
				outErr = err
			}
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			short = n
		default:
			outErr = err
		}
	} else {
		out, outErr = readBounded(p.stdout, maxOutput+1, false)
		if outErr == nil && len(out) > maxOutput {
			outErr = fmt.Errorf("printed more than %d bytes", maxOutput)
		}
	}
	if outErr != nil {
		p.kill()
		finish()
		if errors.Is(outErr, os.ErrDeadlineExceeded) {
			return fail("timed out after %v (killed)", c.timeout)
		}
		return fail("%v (killed)", outErr)
	}

	state, timedOut := p.wait(deadline)
	stderr := finish()
	if timedOut {
		return fail("timed out after %v (killed)", c.timeout)
	}
	ws, _ := state.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return fail("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	switch code := ws.ExitStatus(); code {
	case statusOK:
		if short >= 0 {
			return fail("printed %d bytes, want %d", short, len(dst))
		}
		return reply{status: statusOK, out: string(out)}
	case statusMissing, statusFalse:
		return reply{status: code}
	default:
		errno, msg := parseFailure(stderr)
		if msg == "" {
			msg = fmt.Sprintf("exit status %d and nothing on stderr", code)
		}
		return reply{status: statusError, err: &Error{Script: c.path, Method: method, Errno: errno, Msg: msg}}
	}
}

func (c *execCaller) close() error { return nil }

// proc is a started program and our ends of its pipes, which are
// non-blocking, so reads and writes obey deadlines.
type proc struct {
	cmd            *exec.Cmd
	stdin          *os.File // nil when there is no input
	stdout, stderr *os.File // stderr is nil when not captured
	waited         chan struct{}
	state          *os.ProcessState
	mark           string // its callVar
}

// start starts the program in a process group of its own, so that kill
// reaches whatever it started too.
func (c *execCaller) start(args []string, withInput bool) (*proc, error) {
	return startProc(c.path, args, c.env, withInput, true)
}

func startProc(path string, args, env []string, withInput, captureStderr bool) (p *proc, err error) {
	var closers []*os.File
	defer func() {
		for _, f := range closers {
			f.Close()
		}
	}()
	mark := newMark()
	cmd := exec.Command(path, args...)
	cmd.Env = append(env[:len(env):len(env)], callVar+"="+mark)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p = &proc{cmd: cmd, waited: make(chan struct{}), mark: mark}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("creating a pipe: %w", err)
		}
		return r, w, nil
	}
	var ours []*os.File
	if withInput {
		r, w, err := pipe()
		if err != nil {
			return nil, err
		}
		cmd.Stdin, p.stdin = r, w
		closers, ours = append(closers, r), append(ours, w)
	}
	r, w, err := pipe()
	if err != nil {
		closeAll(ours)
		return nil, err
	}
	cmd.Stdout, p.stdout = w, r
	closers, ours = append(closers, w), append(ours, r)
	if captureStderr {
		r, w, err := pipe()
		if err != nil {
			closeAll(ours)
			return nil, err
		}
		cmd.Stderr, p.stderr = w, r
		closers, ours = append(closers, w), append(ours, r)
	}
	if err := cmd.Start(); err != nil {
		closeAll(ours)
		return nil, err
	}
	go func() {
		cmd.Wait()
		p.state = cmd.ProcessState
		close(p.waited)
	}()
	return p, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func (p *proc) setDeadline(t time.Time) {
	for _, f := range []*os.File{p.stdin, p.stdout, p.stderr} {
		if f != nil {
			f.SetDeadline(t)
		}
	}
}

// kill kills the program's process group, ends any read or write of our
// pipe ends in progress (by moving their deadline to now), waits for the
// program, and then kills what it started outside its group (strays.go). Killing the group before the program is reaped is safe: its
// pid, the group's id, cannot be reused before that. (A group whose leader
// was already reaped keeps its id while any member lives.)
func (p *proc) kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.setDeadline(time.Now())
	<-p.waited
	killMarked(callVar, p.mark)
}

func (p *proc) closePipes() {
	for _, f := range []*os.File{p.stdin, p.stdout, p.stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// wait waits for the program to exit until deadline, then kills its
// process group. It reports whether the deadline passed.
func (p *proc) wait(deadline time.Time) (*os.ProcessState, bool) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.waited:
		return p.state, false
	case <-t.C:
		p.kill()
		return p.state, true
	}
}

// readBounded reads r to its end and returns the first limit bytes. With
// drain, the rest is read and dropped, so that the writer never blocks on
// a full pipe (stderr); without, reading stops at limit bytes (stdout,
// where more is an error). The error is nil at end of file, else the read
// error (such as the deadline passing).
func readBounded(r io.Reader, limit int, drain bool) ([]byte, error) {
	var out []byte
	buf := make([]byte, min(limit, 32<<10))
	for {
		n, err := r.Read(buf)
		if keep := min(n, limit-len(out)); keep > 0 {
			out = append(out, buf[:keep]...)
		}
		if !drain && len(out) == limit {
			return out, nil
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}
