package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/nbd"
)

// A background `nbdloop serve` (NetStart) is two processes, as an attached
// device is: a supervisor in its own session, and the server it starts
// and restarts when it dies (quickly dying servers with the delays of
// restartDelay, giving up after maxQuickDeaths in a row). Each reports to
// its parent once, on the pipe at descriptor resultFD: the record (the
// addresses it listens on) or the error that stopped it. Both log to
// serve-PID.log in the state directory; the supervisor keeps the record
// serve-PID.json (NetState) and removes it when stopped (StopServed:
// SIGTERM, passed on to the server, which flushes its exports).

// NetServeCommand and NetSupervisorCommand are the hidden argv[1] of a
// background serve's server and supervisor processes.
const (
	NetServeCommand      = "__netserve"
	NetSupervisorCommand = "__netsupervise"
)

const netServeEnv = "NBDLOOP_NETSERVE_CONFIG" // the NetConfig, JSON

// netResult is what a background serve's process reports to its parent.
type netResult struct {
	State *NetState `json:"state,omitempty"`
	Error string    `json:"error,omitempty"`
}

// NetStart starts nc as a background serve and returns its record once it
// listens, or the error that stopped it.
func NetStart(nc NetConfig) (*NetState, error) {
	if err := nc.Validate(); err != nil {
		return nil, err
	}
	if nc.SocketActivation {
		return nil, errors.New("--background does not apply under socket activation (the service manager that passed the sockets supervises serve)")
	}
	if err := makeStateDir(StateDir()); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the nbdloop executable: %w", err)
	}
	cmd, rp, err := startNetChild(exe, NetSupervisorCommand, nc, true)
	if err != nil {
		return nil, err
	}
	defer rp.Close()
	res, err := readNetResult(rp)
	if err == nil && res.Error != "" {
		err = errors.New(res.Error)
	}
	if err != nil {
		cmd.Wait()
		return nil, err
	}
	cmd.Process.Release()
	return res.State, nil
}

// startNetChild starts exe as command with nc; a detached child gets a
// session of its own. It returns the read end of the result pipe.
func startNetChild(exe, command string, nc NetConfig, detached bool) (*exec.Cmd, *os.File, error) {
	b, err := json.Marshal(nc)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(exe, command)
	cmd.Env = append(os.Environ(), netServeEnv+"="+string(b))
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer w.Close()
	cmd.ExtraFiles = []*os.File{w}
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("starting the server process: %w", err)
	}
	return cmd, r, nil
}

func readNetResult(r io.Reader) (netResult, error) {
	var res netResult
	b, err := io.ReadAll(r)
	if err != nil {
		return res, err
	}
	if len(b) == 0 {
		return res, errors.New("the server process exited before listening")
	}
	return res, json.Unmarshal(b, &res)
}

// netChildFromEnv reads the NetConfig this process was started with and
// clears it from the environment (exec: sources inherit neither it nor
// the pipe), and returns the function that reports to the parent once.
func netChildFromEnv() (NetConfig, func(netResult) error, error) {
	var nc NetConfig
	err := json.Unmarshal([]byte(os.Getenv(netServeEnv)), &nc)
	os.Unsetenv(netServeEnv)
	if err != nil {
		return nc, nil, fmt.Errorf("nbdloop: bad serve configuration: %v", err)
	}
	unix.CloseOnExec(resultFD)
	pipe := os.NewFile(resultFD, "result")
	reported := false
	return nc, func(res netResult) error {
		if reported {
			return nil
		}
		reported = true
		b, _ := json.Marshal(res)
		_, err := pipe.Write(b)
		if cerr := pipe.Close(); err == nil {
			err = cerr
		}
		return err
	}, nil
}

// RunNetServer is the body of a background serve's server process
// (NetServeCommand): NetServe until SIGTERM, reporting the addresses it
// listens on. It returns the exit status.
func RunNetServer() int {
	nc, report, err := netChildFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	// The counts are published from the first client on: ready runs
	// before ServeListeners accepts any.
	var counter *clientCounter
	nc.Clients = func(e *nbd.Export, delta int) { counter.change(e, delta) }
	err = NetServe(ctx, nc, logger, func(addrs []net.Addr, exports []NetExportState) {
		// The supervisor started this process: its pid names the record.
		counter = newClientCounter(StateDir(), os.Getppid(), os.Getpid(), exports, logger.Printf)
		st := &NetState{PID: os.Getpid(), Started: time.Now(), Exports: exports}
		for _, a := range addrs {
			st.Listen = append(st.Listen, a.Network()+" "+a.String())
			logger.Printf("listening on %s %s", a.Network(), a)
		}
		if err := report(netResult{State: st}); err != nil {
			// The supervisor is gone: nobody would stop this server.
			logger.Printf("reporting to the supervisor failed (%v); stopping", err)
			stop()
		}
	})
	if err != nil {
		report(netResult{Error: err.Error()})
		logger.Printf("serve: %v", err)
		return exitFailed
	}
	return 0
}

// RunNetSupervisor is the body of a background serve's supervisor
// (NetSupervisorCommand). It returns the exit status.
func RunNetSupervisor() int {
	nc, report, err := netChildFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		report(netResult{Error: fmt.Sprintf("finding the nbdloop executable: %v", err)})
		return 1
	}
	signal.Ignore(syscall.SIGPIPE)
	s := &netSupervisor{nc: nc, exe: exe, dir: StateDir(), sigs: make(chan os.Signal, 4)}
	logPath := s.redirectLog()
	signal.Notify(s.sigs, syscall.SIGTERM, syscall.SIGINT)
	cmd, err := s.startFirst(logPath, report)
	if err != nil {
		return 1
	}
	defer os.Remove(netStatePath(s.dir, s.st.Supervisor))
	defer os.Remove(netClientsPath(s.dir, s.st.Supervisor))
	return s.supervise(cmd)
}

// netSupervisor is the state of a background serve's supervisor.
type netSupervisor struct {
	nc     NetConfig
	exe    string
	dir    string
	st     *NetState // the record
	logger *log.Logger
	sigs   chan os.Signal
}

// redirectLog sends the supervisor's stderr, and so its servers', to the
// serve's log file, and returns its path.
func (s *netSupervisor) redirectLog() string {
	logPath := netLogPath(s.dir, os.Getpid())
	redirectStderr(s.dir, logPath)
	s.logger = log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	return logPath
}

// startFirst starts the first server, writes the record and reports it to
// serve --background. On an error, reported or logged, nothing is left.
func (s *netSupervisor) startFirst(logPath string, report func(netResult) error) (*exec.Cmd, error) {
	cmd, st, err := startNetServer(s.exe, s.nc)
	if err != nil {
		report(netResult{Error: err.Error()})
		return nil, err
	}
	// A restarted server listens where the first did: on the port chosen
	// for :0 too.
	for _, l := range st.Listen {
		if addr, ok := strings.CutPrefix(l, "tcp "); ok {
			s.nc.Listen = addr
		}
	}
	st.Supervisor, st.SupervisorStart = os.Getpid(), refOf(os.Getpid()).Start
	st.Log = logPath
	s.st = st
	if err := writeNetState(s.dir, st); err != nil {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		report(netResult{Error: err.Error()})
		return nil, err
	}
	if err := report(netResult{State: st}); err != nil {
		// serve --background is gone (interrupted): nobody was told
		// where the serve listens, so it ends.
		s.logger.Printf("reporting to serve --background failed (%v); stopping", err)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		os.Remove(netStatePath(s.dir, st.Supervisor))
		return nil, err
	}
	return cmd, nil
}

// supervise restarts the server when it dies, until SIGTERM or SIGINT
// (passed on to the server), and returns the exit status.
func (s *netSupervisor) supervise(cmd *exec.Cmd) int {
	quick := 0
	for {
		started := time.Now()
		stopping := false
		ps := awaitServer(cmd, s.sigs, &stopping)
		if stopping {
			s.logger.Printf("serve stopped")
			return 0
		}
		s.st.LastExit = exitReason(ps)
		if why := netNotRestartable(s.nc, s.st.Exports); why != "" {
			quick, s.st.LastExit = maxQuickDeaths, s.st.LastExit+"; not restarted: "+why
		} else if time.Since(started) < quickDeath {
			quick++
		} else {
			quick = 0
		}
		var ok bool
		if cmd, quick, ok = s.restart(quick); !ok {
			return 0
		}
	}
}

// restart starts a new server after a dead one, trying again as the
// restart delays say; after maxQuickDeaths quick deaths it records why it
// gives up and waits for SIGTERM or SIGINT (ok false).
func (s *netSupervisor) restart(quick int) (cmd *exec.Cmd, quickAfter int, ok bool) {
	st := s.st
	for {
		if quick >= maxQuickDeaths {
			st.DeadReason = fmt.Sprintf("the server died %d times in a row within %v of starting (last: %s)", quick, quickDeath, st.LastExit)
			if why := netNotRestartable(s.nc, st.Exports); why != "" {
				st.DeadReason = "the server " + st.LastExit
			}
			s.logger.Printf("%s; giving up", st.DeadReason)
			writeNetState(s.dir, st)
			for sig := range s.sigs {
				if sig == syscall.SIGTERM || sig == syscall.SIGINT {
					return nil, quick, false
				}
			}
		}
		s.logger.Printf("server %s; restarting", st.LastExit)
		time.Sleep(restartDelay(quick))
		st.Restarts++
		cmd, next, err := startNetServer(s.exe, s.nc)
		if err == nil {
			st.PID, st.PIDStart, st.Started, st.Exports = next.PID, next.PIDStart, next.Started, next.Exports
			writeNetState(s.dir, st)
			return cmd, quick, true
		}
		st.LastExit = "restart failed: " + err.Error()
		s.logger.Printf("%s", st.LastExit)
		quick++
	}
}

// startNetServer starts a server process and waits until it listens.
func startNetServer(exe string, nc NetConfig) (*exec.Cmd, *NetState, error) {
	cmd, rp, err := startNetChild(exe, NetServeCommand, nc, false)
	if err != nil {
		return nil, nil, err
	}
	defer rp.Close()
	res, err := readNetResult(rp)
	if err == nil && res.Error != "" {
		err = errors.New(res.Error)
	}
	if err == nil && res.State == nil {
		err = errors.New("the server process reported nothing")
	}
	if err != nil {
		cmd.Wait()
		return nil, nil, err
	}
	res.State.PIDStart = refOf(res.State.PID).Start
	return cmd, res.State, nil
}

// netNotRestartable says why a restarted server would serve other bytes
// than the one that died (a memory: export, written data kept in the
// server process: filters, or formats such as qcow2, as the server that
// died reported them in served), or "" when it would not.
func netNotRestartable(nc NetConfig, served []NetExportState) string {
	for i, e := range nc.Exports {
		if spec, err := ParseSpec(e.Config.Source); err == nil && spec.Kind == KindMemory {
			return fmt.Sprintf("export %q: a memory: export's bytes died with the server", e.Name)
		}
		format := ""
		if i < len(served) && served[i].Name == e.Name {
			format = served[i].Format
		}
		if why := notRestartable(e.Config, format); why != "" {
			return fmt.Sprintf("export %q: %s", e.Name, why)
		}
	}
	return ""
}

// StopServed stops the background serve that target names (an address it
// listens on, as list --served shows it, or its supervisor's pid): its
// server flushes its exports and exits, and its record is removed. It
// waits for that, up to ctx.
func StopServed(ctx context.Context, target string) error {
	list, err := ListServed()
	if err != nil {
		return err
	}
	for _, st := range list {
		if !st.matches(target) {
			continue
		}
		sup := procRef{st.Supervisor, st.SupervisorStart}
		if err := sup.signal(syscall.SIGTERM); err != nil {
			if errors.Is(err, errProcessGone) {
				return os.Remove(netStatePath(StateDir(), st.Supervisor))
			}
			return err
		}
		for sup.alive() {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: the serve did not stop: %w", target, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
		return nil
	}
	return fmt.Errorf("%s: no background serve listens there (see nbdloop list --served)", target)
}
