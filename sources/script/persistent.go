package script

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
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

// call sends one request: the words of args on a line, then in. With dst
// set, a successful reply is followed by exactly len(dst) bytes, read into
// dst.
func (c *persistentCaller) call(args []string, in, dst []byte) reply {
	method := args[0]
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.ready(method, args); !ok {
		return r
	}
	c.p.setDeadline(time.Now().Add(c.timeout))
	if f := c.send(args, in); f != nil {
		return c.broken(method, f)
	}
	r, f := c.receive(method, dst)
	if f != nil {
		return c.broken(method, f)
	}
	return r
}

// ready checks that a request can be sent, starting the program when it
// is not running. When it cannot, ok is false and r is the error reply.
func (c *persistentCaller) ready(method string, args []string) (r reply, ok bool) {
	if c.closed {
		return ioError(c.path, method, "the program was stopped"), false
	}
	for _, a := range args {
		if strings.ContainsAny(a, " \n\x00") {
			return ioError(c.path, method, "argument %q contains a space, newline or NUL", cleanMsg([]byte(a))), false
		}
	}
	if c.p == nil {
		if err := c.start(); err != nil {
			return ioError(c.path, method, "starting: %v", err), false
		}
	}
	return reply{}, true
}

// fault is a program breaking the protocol (or timing out): why, and the
// grace it gets to exit before it is killed. A program that closed its
// stdout is probably exiting: it gets a moment to, so that the log shows
// its exit status.
type fault struct {
	why   string
	grace time.Duration
}

func faultf(grace time.Duration, format string, a ...any) *fault {
	return &fault{why: fmt.Sprintf(format, a...), grace: grace}
}

// broken kills the program after f, which the next request starts again,
// and logs and returns the error reply.
func (c *persistentCaller) broken(method string, f *fault) reply {
	how := c.stop(f.grace)
	r := ioError(c.path, method, "%s; %s", f.why, how)
	c.logf("%v", r.err)
	return r
}

// send writes the request line and in.
func (c *persistentCaller) send(args []string, in []byte) *fault {
	line := strings.TrimRight(strings.Join(args, " "), " ") + "\n"
	if _, err := io.WriteString(c.p.stdin, line); err != nil {
		if isTimeout(err) {
			return faultf(0, "timed out after %v sending the request", c.timeout)
		}
		return faultf(time.Second, "sending the request: %v", err) // probably exited: EPIPE
	}
	if len(in) > 0 {
		if _, err := c.p.stdin.Write(in); err != nil {
			if isTimeout(err) {
				return faultf(0, "timed out after %v sending %d bytes", c.timeout, len(in))
			}
			return faultf(time.Second, "sending %d bytes: %v", len(in), err)
		}
	}
	return nil
}

// receive reads the reply: the status line, then, with dst set and
// success, the data into dst.
func (c *persistentCaller) receive(method string, dst []byte) (reply, *fault) {
	code, rest, f := c.readStatus()
	if f != nil {
		return reply{}, f
	}
	r := reply{status: statusOK, out: rest}
	if code != statusOK {
		r = statusReply(c.path, method, code, []byte(rest), "status %d without an errno name")
	} else if dst != nil {
		if n, err := io.ReadFull(c.out, dst); err != nil {
			if isTimeout(err) {
				return reply{}, faultf(0, "timed out after %v with %d of %d bytes of data", c.timeout, n, len(dst))
			}
			return reply{}, faultf(0, "sent %d of %d bytes of data: %v", n, len(dst), err)
		}
	}
	// Output beyond the reply is a program out of step with its requests:
	// the next reply could not be trusted.
	if n := c.out.Buffered(); n > 0 {
		return reply{}, faultf(0, "%d bytes of output after the reply", n)
	}
	return r, nil
}

// readStatus reads and parses the status line.
func (c *persistentCaller) readStatus() (code int, rest string, f *fault) {
	status, err := c.out.ReadSlice('\n')
	switch {
	case isTimeout(err):
		return 0, "", faultf(0, "timed out after %v waiting for the reply", c.timeout)
	case errors.Is(err, bufio.ErrBufferFull):
		return 0, "", faultf(0, "status line longer than %d bytes", maxStatusLine)
	case errors.Is(err, io.EOF):
		return 0, "", faultf(time.Second, "stdout closed before replying")
	case err != nil:
		return 0, "", faultf(0, "reading the reply: %v", err)
	}
	code, rest, err = parseStatus(bytes.TrimSuffix(bytes.TrimSuffix(status, []byte("\n")), []byte("\r")))
	if err != nil {
		return 0, "", faultf(0, "%v", err)
	}
	return code, rest, nil
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
