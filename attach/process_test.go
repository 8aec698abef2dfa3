package attach

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestProcRef: a procRef reaches its own process, and never one that holds
// the pid after the named process is gone (a reused pid is stood in for by
// a child whose start time differs from the recorded one).
func TestProcRef(t *testing.T) {
	type child struct {
		cmd  *exec.Cmd
		done chan struct{} // closed once it is reaped
	}
	start := func() child {
		c := child{cmd: exec.Command("sleep", "60"), done: make(chan struct{})}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { c.cmd.Wait(); close(c.done) }()
		t.Cleanup(func() { c.cmd.Process.Kill(); <-c.done })
		return c
	}
	exited := func(c child) bool {
		select {
		case <-c.done:
			return true
		case <-time.After(2 * time.Second):
			return false
		}
	}

	ours := start()
	ref := refOf(ours.cmd.Process.Pid)
	if ref.Start == 0 || !ref.alive() {
		t.Fatalf("refOf(child) = %+v, alive %v", ref, ref.alive())
	}

	other := start()
	recycled := procRef{PID: other.cmd.Process.Pid, Start: refOf(other.cmd.Process.Pid).Start - 1}
	if recycled.alive() {
		t.Error("a pid with another start time counts as alive")
	}
	if err := recycled.signal(syscall.SIGTERM); !errors.Is(err, errProcessGone) {
		t.Errorf("signal to a reused pid = %v, want errProcessGone", err)
	}
	if exited(other) {
		t.Fatal("the process holding the reused pid was signalled")
	}

	if err := ref.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal to our child: %v", err)
	}
	if !exited(ours) {
		t.Fatal("our child did not get the signal")
	}
	if err := ref.signal(syscall.SIGTERM); !errors.Is(err, errProcessGone) {
		t.Errorf("signal after exit = %v, want errProcessGone", err)
	}
	if self := refOf(os.Getpid()); !self.alive() {
		t.Error("this process is not alive")
	}
}
