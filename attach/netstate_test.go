package attach

import (
	"os"
	"os/exec"
	"testing"
)

// TestListServed: the state of each record comes from its processes: a
// live server is running, a dead one under a live supervisor restarting, a
// record whose supervisor gave up or is gone dead.
func TestListServed(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NBDLOOP_STATE_DIR", dir)
	// A pid that is certainly gone: a child that has exited and been
	// waited for.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := gone.Process.Pid
	self := refOf(os.Getpid())
	parent := refOf(os.Getppid())
	tests := []struct {
		st         NetState
		state, why string
	}{
		{NetState{Supervisor: parent.PID, SupervisorStart: parent.Start, PID: self.PID, PIDStart: self.Start}, StateRunning, ""},
		{NetState{Supervisor: self.PID, SupervisorStart: self.Start, PID: deadPID}, StateRestarting, ""},
		{NetState{Supervisor: self.PID, SupervisorStart: self.Start + 1, PID: self.PID}, StateDead, "the supervisor is gone"},
		{NetState{Supervisor: deadPID, PID: self.PID}, StateDead, "the supervisor is gone"},
	}
	for i := range tests {
		// Records are named by supervisor pid: one at a time.
		tt := tests[i]
		if err := writeNetState(dir, &tt.st); err != nil {
			t.Fatal(err)
		}
		got, err := ListServed()
		if err != nil || len(got) != 1 {
			t.Fatalf("record %d: ListServed = %+v, %v", i, got, err)
		}
		if got[0].State != tt.state || got[0].DeadReason != tt.why {
			t.Errorf("record %d: state %q (%q), want %q (%q)", i, got[0].State, got[0].DeadReason, tt.state, tt.why)
		}
		os.Remove(netStatePath(dir, tt.st.Supervisor))
	}
	gaveUp := NetState{Supervisor: self.PID, SupervisorStart: self.Start, PID: deadPID, DeadReason: "the server died 5 times"}
	writeNetState(dir, &gaveUp)
	if got, _ := ListServed(); len(got) != 1 || got[0].State != StateDead || got[0].DeadReason != "the server died 5 times" {
		t.Errorf("a record the supervisor gave up: %+v", got)
	}
}

func TestNetStateMatches(t *testing.T) {
	st := NetState{Supervisor: 4242, Listen: []string{"tcp 127.0.0.1:10809", "unix /run/nbd.sock"}}
	for target, want := range map[string]bool{
		"127.0.0.1:10809": true, "tcp 127.0.0.1:10809": true, "/run/nbd.sock": true, "unix /run/nbd.sock": true, "4242": true,
		"127.0.0.1": false, "10809": false, "/run/other.sock": false, "424": false, "": false,
	} {
		if got := st.matches(target); got != want {
			t.Errorf("matches(%q) = %v, want %v", target, got, want)
		}
	}
}
