package script

import (
	"errors"
	"fmt"
	"io"
	"os"
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

// call runs `path args...` with in on its stdin (nil: /dev/null). With dst
// set (pread), stdout must be exactly len(dst) bytes and goes into dst;
// otherwise stdout, up to maxOutput bytes, is reply.out.
func (c *execCaller) call(args []string, in, dst []byte) reply {
	method := args[0]
	for _, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return ioError(c.path, method, "argument %q contains a NUL byte", cleanMsg([]byte(a)))
		}
	}
	p, err := c.start(args, in != nil)
	if err != nil {
		return ioError(c.path, method, "%v", err)
	}
	deadline := time.Now().Add(c.timeout)
	p.setDeadline(deadline)
	finish := pipeHelpers(p, in)

	// stdout first: the program may not exit before its output is read.
	out, short, err := readStdout(p.stdout, dst)
	if err != nil {
		p.kill()
		finish()
		if isTimeout(err) {
			return ioError(c.path, method, "timed out after %v (killed)", c.timeout)
		}
		return ioError(c.path, method, "%v (killed)", err)
	}
	state, timedOut := p.wait(deadline)
	stderr := finish()
	if timedOut {
		return ioError(c.path, method, "timed out after %v (killed)", c.timeout)
	}
	return c.exitReply(method, state, stderr, out, short, len(dst))
}

func (c *execCaller) close() error { return nil }

// start starts the program in a process group of its own, so that kill
// reaches whatever it started too.
func (c *execCaller) start(args []string, withInput bool) (*proc, error) {
	return startProc(c.path, args, c.env, withInput, true)
}

// pipeHelpers starts the two helpers of a call: one writes in to the
// program's stdin and closes it (none when in is nil), one reads its
// stderr, keeping maxStderr bytes. The finish it returns waits for both,
// which end by the deadline at the latest, then releases our pipe ends and
// returns the stderr kept.
func pipeHelpers(p *proc, in []byte) (finish func() []byte) {
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
	return func() []byte {
		<-inDone
		b := <-errDone
		p.closePipes()
		return b
	}
}

// readStdout reads the program's stdout. With dst set, it reads exactly
// len(dst) bytes into dst; short is the count received when the program
// printed fewer, else -1. Without, out is all of stdout. err is a read
// error (the deadline passing, say) or output beyond those bounds.
func readStdout(r io.Reader, dst []byte) (out []byte, short int, err error) {
	if dst != nil {
		short, err = readExactly(r, dst)
		return nil, short, err
	}
	out, err = readBounded(r, maxOutput+1, false)
	if err == nil && len(out) > maxOutput {
		err = fmt.Errorf("printed more than %d bytes", maxOutput)
	}
	return out, -1, err
}

// readExactly reads r to its end into dst, which it must fill exactly:
// short is the count received when r ends sooner, else -1; more than
// len(dst) bytes is an error.
func readExactly(r io.Reader, dst []byte) (short int, err error) {
	n, err := io.ReadFull(r, dst)
	switch {
	case err == nil:
		var extra [1]byte
		if k, err := r.Read(extra[:]); k > 0 {
			return -1, fmt.Errorf("printed more than the %d bytes asked for", len(dst))
		} else if err != io.EOF {
			return -1, err
		}
		return -1, nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return n, nil
	default:
		return -1, err
	}
}

// exitReply is the reply for how the program ended: by a signal, with an
// exit status, or with status 0 after printing short bytes (-1: all) of
// the want that pread asked for.
func (c *execCaller) exitReply(method string, state *os.ProcessState, stderr, out []byte, short, want int) reply {
	ws, _ := state.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return ioError(c.path, method, "%s", killedBy(ws))
	}
	if code := ws.ExitStatus(); code != statusOK {
		return statusReply(c.path, method, code, stderr, "exit status %d and nothing on stderr")
	}
	if short >= 0 {
		return ioError(c.path, method, "printed %d bytes, want %d", short, want)
	}
	return reply{status: statusOK, out: string(out)}
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
