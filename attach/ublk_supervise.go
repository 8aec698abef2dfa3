package attach

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// runUblk is the supervisor of a ublk device (supervise.go describes
// supervision): it starts the first server, reports it to attach, and
// when a server dies without a detach starts another, which takes the
// device over with ublk's user recovery (START_USER_RECOVERY,
// END_USER_RECOVERY) while the kernel holds the device's I/O; requests the
// dead server had are sent again. The restart policy is the NBD
// supervisor's: a growing delay between quick deaths, giving up after
// maxQuickDeaths of them in a row or for a source that died with its
// server. It returns the exit status.
func (s *supervisor) runUblk(takeover *State, reportParent func(Result) error) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2, syscall.SIGHUP)
	srv, res := s.startServer(takeover)
	if code, ok := s.reportFirst(srv, res, reportParent); !ok {
		return code
	}
	dir := StateDir()
	redirectStderr(dir, ublkLogPath(dir, s.index))
	for {
		ps := awaitServer(srv.cmd, sigs, &s.stopping)
		if srv.err == nil {
			s.lastExit = exitReason(ps)
		}
		name := s.last.Name()
		if s.stopping || (ps != nil && ps.Exited() && ps.ExitCode() == exitDetached) {
			s.logf("%s: server %s; detached: not restarting", name, s.lastExit)
			return 0
		}
		if why := notRestartable(s.cfg, s.last.Format); why != "" {
			s.giveUpUblk(fmt.Sprintf("the server %s and %s", s.lastExit, why))
			return 0
		}
		if srv.err != nil || time.Since(srv.started) < quickDeath {
			s.quick++
		} else {
			s.quick = 1
		}
		if s.quick > maxQuickDeaths {
			s.giveUpUblk(fmt.Sprintf("the server died %d times in a row within %v of starting (last: %s)", maxQuickDeaths, quickDeath, s.lastExit))
			return 0
		}
		s.logf("%s: server %s; restarting", name, s.lastExit)
		time.Sleep(restartDelay(s.quick))
		s.restarts++
		if srv, _ = s.startServer(s.last.takeover(s.restarts, s.lastExit)); srv.err != nil {
			s.logf("%s: restart failed: %v", name, srv.err)
		}
	}
}

// giveUpUblk records in the ublk record why the device is left dead; the
// kernel holds its I/O until it is detached.
func (s *supervisor) giveUpUblk(reason string) {
	s.logf("%s: giving up: %s", s.last.Name(), reason)
	dir := StateDir()
	if st := readUblkState(dir, s.index); st != nil {
		st.DeadReason = reason
		if err := writeRecord(dir, ublkStatePath(dir, s.index), st); err != nil {
			s.logf("%s: recording why: %v", s.last.Name(), err)
		}
	}
}

// ublkLogPath is the log of ublk device id in dir.
func ublkLogPath(dir string, id int) string {
	return filepath.Join(dir, fmt.Sprintf("ublkb%d.log", id))
}
