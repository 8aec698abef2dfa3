package script

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

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

// startProc starts path with args and env (plus its callVar mark) in a
// process group of its own, with a stdin pipe when withInput (else
// /dev/null), a stdout pipe, and a stderr pipe when captureStderr (else
// /dev/null).
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
// program, and then kills what it started outside its group (strays.go).
// Killing the group before the program is reaped is safe: its pid, the
// group's id, cannot be reused before that. (A group whose leader was
// already reaped keeps its id while any member lives.)
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

// describeExit says how a program ended: its exit status or the signal
// that killed it.
func describeExit(st *os.ProcessState) string {
	if st == nil {
		return "not started"
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return killedBy(ws)
	}
	return fmt.Sprintf("exit status %d", st.ExitCode())
}

// killedBy says which signal ended a program that ws says was signaled.
func killedBy(ws syscall.WaitStatus) string {
	return fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
}
