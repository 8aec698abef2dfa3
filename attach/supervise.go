package attach

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/kernel"
)

// Supervision. `attach` starts a supervisor process (SuperviseCommand), in
// its own session, and the supervisor starts the server process and waits
// for it. When the server dies without a detach (kill -9, a panic, the
// kernel dropping every connection), the supervisor starts a new server with
// the same Config, which serves the same source and hands fresh sockets to
// the kernel with NBD_CMD_RECONFIGURE, matched by the device's backend
// identifier. The kernel holds new I/O for the dead-connection timeout
// (--dead-timeout, 30 s) while no connection is alive, so a restart within
// it is invisible to a mounted file system; requests that were in flight in
// the dead server are sent again when the kernel's request timer (30 s)
// finds them.
//
// What survives: a file (or block device) keeps everything a server wrote
// before it died (pwrite went to the page cache, which belongs to the
// kernel); a memory: device keeps its bytes in a memfd that the supervisor
// holds and hands to each server. If the supervisor dies too, the memfd
// lives on in the server, and `nbdloop restart` takes it over (pidfd_getfd);
// if both die, a RAM disk's contents are gone. A reboot keeps files only.
// Sources that keep written data inside the server process (the cow filter's
// overlay, memory: parts of --concat or --partitions, qcow2's unflushed
// cluster mappings) cannot be restarted:
// the supervisor leaves such a device dead rather than serve stale data.
//
// A server that dies again soon after starting is restarted with a growing
// delay (0, 0.1, 0.2, 0.4, 0.8 s); after maxQuickDeaths quick deaths in a
// row the supervisor gives up, records why in the state record (`list`
// shows it) and waits: SIGHUP (sent by `nbdloop restart`) tries again,
// SIGUSR2 (sent by `detach`) or SIGTERM ends it.

const (
	// quickDeath: a server that dies within this time of starting counts
	// towards giving up.
	quickDeath = 10 * time.Second
	// maxQuickDeaths in a row make the supervisor give up.
	maxQuickDeaths = 5
)

// restartDelay is the pause before the n-th quick restart in a row (n >= 1).
func restartDelay(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	return 100 * time.Millisecond << min(n-2, 6)
}

// exitReason describes how a server process ended, for `list`.
func exitReason(ps *os.ProcessState) string {
	if ps == nil {
		return "vanished"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Signaled():
			return fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
		case ws.Exited():
			switch ws.ExitStatus() {
			case exitConnectionsLost:
				return "lost every connection (exit status 3)"
			case exitRestartRequested:
				return "handed over on request (exit status 4)"
			case exitResizeRequested:
				return "handed over for a resize (exit status 5)"
			}
			return fmt.Sprintf("exit status %d", ws.ExitStatus())
		}
	}
	return ps.String()
}

// notRestartable says why cfg's server cannot be restarted without losing
// data, or "" when it can.
func notRestartable(cfg Config, format string) string {
	for _, fm := range probeTable {
		if fm.name == format && fm.diesWithServer != "" {
			return fm.diesWithServer
		}
	}
	if specs, err := cfg.filterSpecs(); err == nil {
		if why := filters.DiesWithServer(specs); why != "" {
			return why
		}
	}
	for _, p := range cfg.Composite.Sources {
		if cfg.Layout != "" && strings.HasPrefix(p, "memory:") {
			return "memory: parts of a composite disk live in the server process and died with it"
		}
	}
	return ""
}

// supervisor is the state of one supervisor process.
type supervisor struct {
	cfg     Config
	exe     string
	memFile *os.File
	logf    func(string, ...any)
	trace   Tracef // its steps, with debugEnv (trace.go)
	// progress passes a server's Progress on to attach, until the first
	// server's Result has been reported.
	progress func(Progress)

	mu        sync.Mutex
	linkDeads int // LINK_DEAD events for our device since the last start
	index     int // -1 until the first server has attached

	// last is the record of the last server that attached (or the one
	// taken over); the next server takes it over.
	last     *State
	restarts int    // servers started after the first
	lastExit string // how the previous server ended
	stopping bool   // no more restarts: detach or SIGTERM
	quick    int    // quick deaths in a row
}

// running is a server process the supervisor started, and how its start
// went: err is set when it never served.
type running struct {
	cmd     *exec.Cmd
	started time.Time
	err     error
}

// RunSupervisor is the body of the supervisor process (SuperviseCommand).
// It reports the first server's Result to `attach` through descriptor 3,
// then restarts servers until the device is detached. It returns the exit
// status.
func RunSupervisor() int {
	s, takeover, reportParent, code := supervisorFromEnv()
	if s == nil {
		return code
	}
	if s.cfg.isUblk() {
		return s.runUblk(takeover, reportParent)
	}
	return s.run(takeover, reportParent)
}

// supervisorFromEnv builds the supervisor from what attach (or restart)
// passed: the Config, a record to take over, an inherited memfd, the
// result pipe. A nil supervisor comes with the exit status.
func supervisorFromEnv() (*supervisor, *State, func(Result) error, int) {
	c, reportParent, err := childFromEnv(SuperviseCommand)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return nil, nil, nil, 2
	}
	exe, err := os.Executable()
	if err != nil {
		reportParent(Result{Error: fmt.Sprintf("finding the nbdloop executable: %v", err)})
		return nil, nil, nil, 1
	}
	os.WriteFile("/proc/self/oom_score_adj", []byte("-1000\n"), 0)
	signal.Ignore(syscall.SIGPIPE)

	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	s := &supervisor{cfg: c.cfg, exe: exe, logf: logger.Printf, index: -1, memFile: c.memFile, trace: debugTrace("supervisor"), progress: c.progress}
	if spec, err := ParseSpec(c.cfg.Source); err == nil && spec.Kind == KindMemory && s.memFile == nil {
		if s.memFile, err = newMemfd(spec); err != nil {
			reportParent(Result{Error: err.Error()})
			return nil, nil, nil, 1
		}
	}
	if c.takeover != nil {
		s.index = c.takeover.Config.Index
		s.last, s.restarts, s.lastExit = c.takeover, c.takeover.Restarts, c.takeover.LastExit
	}
	return s, c.takeover, reportParent, 0
}

// run starts the first server, reports it to attach, and restarts servers
// as the restart policy says until the device is detached. It returns the
// exit status.
func (s *supervisor) run(takeover *State, reportParent func(Result) error) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.watchLinkDead(ctx)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2, syscall.SIGHUP)

	srv, res := s.startServer(takeover)
	if code, ok := s.reportFirst(srv, res, reportParent); !ok {
		return code
	}
	s.redirectLog()
	for {
		ps := awaitServer(srv.cmd, sigs, &s.stopping)
		d := s.decide(srv, ps)
		s.quick = d.Quick
		switch d.Action {
		case stopSupervising:
			s.logf("%s", d.Why)
			return 0
		case giveUp:
			s.giveUp(d.Why)
			return s.waitAfterGivingUp(ctx, sigs, nil)
		case giveUpRetry:
			s.giveUp(d.Why)
			retry := make(chan struct{}, 1)
			if code := s.waitAfterGivingUp(ctx, sigs, retry); code >= 0 {
				return code
			}
			s.quick = 0
			d.Delay = restartDelay(s.quick)
			d.Why = fmt.Sprintf("%s: server %s; restarting", deviceName(s.index), s.lastExit)
		}
		s.logf("%s", d.Why)
		time.Sleep(d.Delay)
		s.awaitDeadLinks(time.Second)
		s.restarts++
		next := s.last.takeover(s.restarts, s.lastExit)
		next.Resize = srv.err == nil && ps != nil && ps.Exited() && ps.ExitCode() == exitResizeRequested
		if srv, _ = s.startServer(next); srv.err != nil {
			s.logf("%s: restart failed: %v", deviceName(s.index), srv.err)
		}
	}
}

// reportFirst reports the first server's start to attach. It returns
// false, with the exit status, when the supervisor's job ends there: the
// server failed, or attach is gone (interrupted) and nobody knows about
// the device, which is then undone as an unsupervised server would.
func (s *supervisor) reportFirst(srv running, res Result, reportParent func(Result) error) (int, bool) {
	if srv.err != nil && res.Error == "" {
		res.Error = srv.err.Error()
	}
	if rerr := reportParent(res); rerr != nil && res.Error == "" {
		s.logf("reporting to attach failed (%v); detaching", rerr)
		srv.cmd.Process.Signal(syscall.SIGTERM)
		srv.cmd.Wait()
		return 1, false
	}
	if res.Error != "" {
		if srv.cmd != nil {
			srv.cmd.Wait()
		}
		return 1, false
	}
	return 0, true
}

// startServer starts a server taking over the device of takeover (nil: a
// new device) and notes the record of a server that attached.
func (s *supervisor) startServer(takeover *State) (running, Result) {
	srv := running{started: time.Now()}
	var res Result
	srv.cmd, res, srv.err = s.start(takeover)
	if srv.err == nil && res.State == nil {
		srv.err = errors.New(res.Error)
	}
	if srv.err != nil {
		s.lastExit = "restart failed: " + srv.err.Error()
		return srv, res
	}
	s.mu.Lock()
	s.index = res.State.Config.Index
	s.linkDeads = 0
	s.mu.Unlock()
	s.last = res.State
	return srv, res
}

// decide turns how the server ended (ps) into the restart policy's facts
// and returns its decision.
func (s *supervisor) decide(srv running, ps *os.ProcessState) restartDecision {
	if srv.err == nil {
		s.lastExit = exitReason(ps)
	}
	var backendID, format string
	if s.last != nil {
		backendID, format = s.last.BackendID, s.last.Format
	}
	return decideRestart(serverEnd{
		Index: s.index, LastExit: s.lastExit, Stopping: s.stopping, Failed: srv.err != nil,
		Detached:       ps != nil && ps.Exited() && ps.ExitCode() == exitDetached,
		Attached:       !s.stopping && s.stillOurs(backendID),
		NotRestartable: notRestartable(s.cfg, format),
		Ran:            time.Since(srv.started), Quick: s.quick,
	})
}

// awaitServer waits for the server to end, and meanwhile for the signals
// that stop restarts: SIGTERM and SIGINT (passed on to the server) and
// SIGUSR2 (detach) set *stopping.
func awaitServer(cmd *exec.Cmd, sigs <-chan os.Signal, stopping *bool) *os.ProcessState {
	exited := make(chan *os.ProcessState, 1)
	if cmd != nil {
		go func() { cmd.Wait(); exited <- cmd.ProcessState }()
	} else {
		exited <- nil
	}
	for {
		select {
		case ps := <-exited:
			return ps
		case sig := <-sigs:
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT:
				*stopping = true
				if cmd != nil && cmd.Process != nil {
					cmd.Process.Signal(syscall.SIGTERM)
				}
			case syscall.SIGUSR2:
				*stopping = true
			}
		}
	}
}

// start starts a server process and reads its Result. A nil error with a
// Result.Error means the server started and then failed.
func (s *supervisor) start(takeover *State) (*exec.Cmd, Result, error) {
	c := child{command: ServeCommand, cfg: s.cfg, takeover: takeover, memFile: s.memFile, supervisor: os.Getpid()}
	s.trace.tracef("starting the server: %s %s", s.exe, ServeCommand)
	cmd, rp, err := c.start(s.exe, false)
	if err != nil {
		return nil, Result{}, err
	}
	s.trace.tracef("started server process %d", cmd.Process.Pid)
	defer rp.Close()
	res, err := receiveResult(rp, s.progress)
	if err != nil {
		return cmd, Result{}, fmt.Errorf("the server process exited before attaching (%s)", waitReason(cmd))
	}
	return cmd, res, nil
}

// waitReason waits for a server that ended without a Result and says how.
func waitReason(cmd *exec.Cmd) string {
	cmd.Wait()
	return exitReason(cmd.ProcessState)
}

// watchLinkDead counts LINK_DEAD events for the device, so that a restart
// can wait until the kernel has marked every old connection dead: a socket
// given to RECONFIGURE while no slot is dead is silently dropped.
func (s *supervisor) watchLinkDead(ctx context.Context) {
	fam, err := kernel.Open()
	if err != nil {
		s.logf("supervisor: cannot watch for dead connections: %v", err)
		return
	}
	go func() {
		err := fam.WatchLinkDead(ctx, func(index int) {
			s.mu.Lock()
			if index == s.index {
				s.linkDeads++
			}
			s.mu.Unlock()
		})
		if err != nil && ctx.Err() == nil {
			s.logf("supervisor: watching for dead connections: %v", err)
		}
	}()
}

// awaitDeadLinks waits until every connection of the last server has been
// reported dead, or timeout passes.
func (s *supervisor) awaitDeadLinks(timeout time.Duration) {
	waitFor(context.Background(), timeout, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.linkDeads >= s.cfg.Connections
	})
}

// stillOurs reports whether the kernel still has the device bound with our
// backend identifier (after a detach it does not).
func (s *supervisor) stillOurs(backendID string) bool {
	if s.index < 0 {
		return false
	}
	sys := kernel.Sysfs{}
	if _, ok, err := sys.PID(s.index); err != nil || !ok {
		return false
	}
	b, err := sys.Backend(s.index)
	return err == nil && b == backendID
}

// giveUp records in the state record why the device is left dead.
func (s *supervisor) giveUp(reason string) {
	s.logf("/dev/nbd%d: giving up: %s", s.index, reason)
	dir := StateDir()
	if st := readState(dir, s.index); st != nil {
		st.DeadReason = reason
		if err := writeState(dir, st); err != nil {
			s.logf("/dev/nbd%d: recording why: %v", s.index, err)
		}
	}
}

// waitAfterGivingUp keeps the supervisor (and a RAM disk's memfd) alive
// after giving up, until SIGHUP asks for another try (it returns -1 if
// retry is not nil), SIGUSR2 or SIGTERM ends it, or the device is detached
// (it returns 0).
func (s *supervisor) waitAfterGivingUp(ctx context.Context, sigs chan os.Signal, retry chan struct{}) int {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP && retry != nil {
				s.logf("/dev/nbd%d: SIGHUP: trying again", s.index)
				dir := StateDir()
				if st := readState(dir, s.index); st != nil {
					st.DeadReason = ""
					writeState(dir, st)
				}
				return -1
			}
			if sig != syscall.SIGHUP {
				return 0
			}
		case <-tick.C:
			if s.last == nil || !s.stillOurs(s.last.BackendID) {
				return 0
			}
		case <-ctx.Done():
			return 0
		}
	}
}

// redirectLog sends the supervisor's stderr, and so its servers', to the
// device's log file next to the state record, once the device is known.
func (s *supervisor) redirectLog() {
	if s.index < 0 {
		return
	}
	redirectStderr(StateDir(), deviceLogPath(StateDir(), s.index))
}
