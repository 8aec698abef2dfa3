package attach

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// procRef names a process by what cannot be recycled: its pid and its start
// time (field 22 of /proc/PID/stat, clock ticks since boot). A pid whose
// process died and was reused by another has another start time, so a
// procRef never reaches it. Start 0 (records of older nbdloop versions)
// checks the pid alone.
type procRef struct {
	PID   int
	Start uint64
}

// errProcessGone is returned by signal when the process is no longer the
// one the procRef names.
var errProcessGone = errors.New("the process has exited")

// refOf returns a procRef for pid, which must be this process or one it
// knows to be alive and its own (its parent, its child).
func refOf(pid int) procRef {
	start, _ := procStart(pid)
	return procRef{PID: pid, Start: start}
}

// alive reports whether the process runs (is not a zombie) and is still
// the one named.
func (p procRef) alive() bool {
	if !processAlive(p.PID) {
		return false
	}
	if p.Start == 0 {
		return true
	}
	start, ok := procStart(p.PID)
	return ok && start == p.Start
}

// signal sends sig to the process named, through a pidfd taken before its
// start time is checked: once the pidfd is open the pid cannot be reused
// for another process, so the signal reaches the process checked or none.
func (p procRef) signal(sig syscall.Signal) error {
	if p.PID <= 0 {
		return errProcessGone
	}
	pfd, err := unix.PidfdOpen(p.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return errProcessGone
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", p.PID, err)
	}
	defer unix.Close(pfd)
	if p.Start != 0 {
		if start, ok := procStart(p.PID); !ok || start != p.Start {
			return errProcessGone
		}
	}
	if err := unix.PidfdSendSignal(pfd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return errProcessGone
		}
		return fmt.Errorf("pidfd_send_signal %d: %w", p.PID, err)
	}
	return nil
}

// procStart reads the start time of process pid.
func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The fields after the command name, which is in parentheses and may
	// contain anything: state is the first (field 3), starttime field 22.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return start, err == nil
}
