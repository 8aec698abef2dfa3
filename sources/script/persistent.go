package script

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxStatusLine bounds a persistent program's status line.
const maxStatusLine = 4 << 10

// persistentCaller keeps one program running and sends it one request at a
// time. A program that breaks the protocol, times out or dies is killed
// (its process group) and started again for the next request.
type persistentCaller struct {
	path    string
	args    []string
	env     []string
	timeout time.Duration
	logf    func(format string, args ...any)

	mu      sync.Mutex // serializes requests; guards what follows
	p       *proc      // nil: not running
	out     *bufio.Reader
	logDone chan struct{} // closed when the stderr logger has ended
	starts  int
	closed  bool
}

func (c *persistentCaller) start() error {
	p, err := startProc(c.path, c.args, c.env, true, true)
	if err != nil {
		return err
	}
	c.starts++
	if c.starts > 1 {
		c.logf("%s: started again (start %d)", c.path, c.starts)
	}
	c.p = p
	c.out = bufio.NewReaderSize(p.stdout, maxStatusLine)
	c.logDone = make(chan struct{})
	go c.logStderr(p.stderr, c.logDone)
	return nil
}

// logStderr copies the program's stderr to the log a line at a time, each
// line cut to maxMsg bytes.
func (c *persistentCaller) logStderr(r io.Reader, done chan struct{}) {
	defer close(done)
	br := bufio.NewReaderSize(r, maxMsg)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			c.logf("%s: %s", c.path, cleanMsg(bytes.TrimRight(line, "\n")))
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return
		}
	}
}

// stop ends the running program: it closes its stdin, gives it grace to
// exit, then kills its process group. It returns how the program ended.
func (c *persistentCaller) stop(grace time.Duration) string {
	p := c.p
	if p == nil {
		return ""
	}
	c.p = nil
	p.stdin.Close()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.waited:
		// The leader exited; whatever it left in its group, or started
		// outside it, goes too.
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		killMarked(callVar, p.mark)
	case <-t.C:
		p.kill()
	}
	p.stdout.Close()
	// The logger ends at end of file, or now if something the program
	// started still holds its stderr.
	select {
	case <-c.logDone:
	case <-time.After(100 * time.Millisecond):
		p.stderr.SetDeadline(time.Now())
		<-c.logDone
	}
	p.stderr.Close()
	return describeExit(p.state)
}

func describeExit(st *os.ProcessState) string {
	if st == nil {
		return "not started"
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	return fmt.Sprintf("exit status %d", st.ExitCode())
}

// call sends one request: the words of args on a line, then in. With dst
// set, a successful reply is followed by exactly len(dst) bytes, read into
// dst.
func (c *persistentCaller) call(args []string, in, dst []byte) reply {
	method := args[0]
	c.mu.Lock()
	defer c.mu.Unlock()
	fail := func(format string, a ...any) reply {
		return reply{status: statusError, err: &Error{Script: c.path, Method: method, Errno: syscall.EIO, Msg: fmt.Sprintf(format, a...)}}
	}
	if c.closed {
		return fail("the program was stopped")
	}
	for _, a := range args {
		if strings.ContainsAny(a, " \n\x00") {
			return fail("argument %q contains a space, newline or NUL", cleanMsg([]byte(a)))
		}
	}
	if c.p == nil {
		if err := c.start(); err != nil {
			return fail("starting: %v", err)
		}
	}
	// broken kills the program, which the next request starts again. A
	// program that closed its stdout is probably exiting: it gets a moment
	// to, so that the log shows its exit status.
	grace := time.Duration(0)
	broken := func(format string, a ...any) reply {
		why := fmt.Sprintf(format, a...)
		how := c.stop(grace)
		r := fail("%s; %s", why, how)
		c.logf("%v", r.err)
		return r
	}
	deadline := time.Now().Add(c.timeout)
	c.p.setDeadline(deadline)
	timedOut := func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

	line := strings.TrimRight(strings.Join(args, " "), " ") + "\n"
	if _, err := io.WriteString(c.p.stdin, line); err != nil {
		if timedOut(err) {
			return broken("timed out after %v sending the request", c.timeout)
		}
		grace = time.Second // probably exited: EPIPE
		return broken("sending the request: %v", err)
	}
	if len(in) > 0 {
		if _, err := c.p.stdin.Write(in); err != nil {
			if timedOut(err) {
				return broken("timed out after %v sending %d bytes", c.timeout, len(in))
			}
			grace = time.Second
			return broken("sending %d bytes: %v", len(in), err)
		}
	}
	status, err := c.out.ReadSlice('\n')
	switch {
	case timedOut(err):
		return broken("timed out after %v waiting for the reply", c.timeout)
	case errors.Is(err, bufio.ErrBufferFull):
		return broken("status line longer than %d bytes", maxStatusLine)
	case errors.Is(err, io.EOF):
		grace = time.Second
		return broken("stdout closed before replying")
	case err != nil:
		return broken("reading the reply: %v", err)
	}
	code, rest, err := parseStatus(bytes.TrimSuffix(bytes.TrimSuffix(status, []byte("\n")), []byte("\r")))
	if err != nil {
		return broken("%v", err)
	}
	var r reply
	switch code {
	case statusOK:
		r = reply{status: statusOK, out: rest}
		if dst != nil {
			if n, err := io.ReadFull(c.out, dst); err != nil {
				if timedOut(err) {
					return broken("timed out after %v with %d of %d bytes of data", c.timeout, n, len(dst))
				}
				return broken("sent %d of %d bytes of data: %v", n, len(dst), err)
			}
		}
	case statusMissing, statusFalse:
		r = reply{status: code}
	default:
		errno, msg := parseFailure([]byte(rest))
		if msg == "" {
			msg = fmt.Sprintf("status %d without an errno name", code)
		}
		r = reply{status: statusError, err: &Error{Script: c.path, Method: method, Errno: errno, Msg: msg}}
	}
	// Output beyond the reply is a program out of step with its requests:
	// the next reply could not be trusted.
	if n := c.out.Buffered(); n > 0 {
		return broken("%d bytes of output after the reply", n)
	}
	return r
}

// close ends the program: end of file on its stdin, then up to the timeout
// for it to exit before its process group is killed.
func (c *persistentCaller) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.stop(c.timeout)
	return nil
}
