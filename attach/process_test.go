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
	start := func() *exec.Cmd {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	exited := func(cmd *exec.Cmd) bool {
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
			return true
		case <-time.After(2 * time.Second):
			return false
		}
	}

	ours := start()
	ref := refOf(ours.Process.Pid)
	if ref.Start == 0 || !ref.alive() {
		t.Fatalf("refOf(child) = %+v, alive %v", ref, ref.alive())
	}

	other := start()
	recycled := procRef{PID: other.Process.Pid, Start: refOf(other.Process.Pid).Start - 1}
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
