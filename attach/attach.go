package attach

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Attach starts a detached server process for cfg and waits until it has
// attached the device or failed. On success the process keeps serving after
// Attach returns; on failure nothing is left behind: the server process
// undoes its own work before it reports an error, and it exits.
//
// With a trace in ctx (WithTrace), Attach says what it does, and the
// processes it starts say what they do on this process's stderr.
func Attach(ctx context.Context, cfg Config) (*Device, []string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	trace := traceOf(ctx)
	cfg, err := cfg.pinned()
	if err != nil {
		return nil, nil, err
	}
	tracePinned(trace, cfg)
	// The supervisor starts the server and restarts it if it dies
	// (supervise.go); with --no-restart the server runs alone.
	command := SuperviseCommand
	if cfg.NoRestart {
		command = ServeCommand
	}
	return spawn(ctx, child{command: command, cfg: cfg, debug: trace != nil})
}

// spawn starts c detached and waits for its Result, giving the Progress
// reported meanwhile to c.cfg.Progress.
func spawn(ctx context.Context, c child) (*Device, []string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("finding the nbdloop executable: %w", err)
	}
	trace := traceOf(ctx)
	what := "the supervisor, which starts the server"
	if c.command == ServeCommand {
		what = "the server (--no-restart: no supervisor)"
	}
	trace.tracef("starting %s: %s %s", what, exe, c.command)
	cmd, r, err := c.start(exe, true)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	trace.tracef("started process %d; waiting for its report", cmd.Process.Pid)
	type readResult struct {
		res Result
		err error
	}
	got := make(chan readResult, 1)
	go func() {
		res, err := receiveResult(r, c.cfg.Progress)
		got <- readResult{res, err}
	}()
	var rr readResult
	select {
	case rr = <-got:
	case <-ctx.Done():
		// Closing our end makes the server's report fail, and a server
		// whose report fails detaches and exits.
		r.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		return nil, nil, ctx.Err()
	}
	if rr.err != nil {
		werr := cmd.Wait()
		return nil, nil, fmt.Errorf("the server process exited before attaching (%v)", werr)
	}
	if rr.res.Error != "" || rr.res.State == nil {
		cmd.Wait()
		return nil, rr.res.Warnings, errors.New(rr.res.Error)
	}
	cmd.Process.Release()
	trace.tracef("attached %s (server process %d)", rr.res.State.Name(), rr.res.State.PID)
	return rr.res.State.device(), rr.res.Warnings, nil
}

// RunServerProcess is the body of the re-executed server process: it reads
// its Config from the environment, serves until detached or signalled and
// reports to the parent through descriptor 3. It returns the exit status.
func RunServerProcess() int {
	c, report, err := childFromEnv(ServeCommand)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	so := serveOptions{resume: c.takeover, memFile: c.memFile, supervisor: c.supervisor, trace: debugTrace("server"), progress: c.progress}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	if so.supervisor != 0 {
		restart := make(chan os.Signal, 1)
		signal.Notify(restart, syscall.SIGUSR1, syscall.SIGWINCH)
		so.restartRequested = restart
	}
	switch err := serve(ctx, realHost(), c.cfg, true, so, report); {
	case err == nil:
		return exitDetached
	case errors.Is(err, errConnectionsLost):
		return exitConnectionsLost
	case errors.Is(err, errRestartRequested):
		return exitRestartRequested
	case errors.Is(err, errResizeRequested):
		return exitResizeRequested
	}
	return exitFailed
}

// Foreground attaches cfg and serves in the calling process until the device
// is detached or ctx is cancelled; ready is called once the device is usable.
func Foreground(ctx context.Context, cfg Config, ready func(*Device, []string)) error {
	cfg, err := cfg.pinned()
	if err != nil {
		return err
	}
	tracePinned(traceOf(ctx), cfg)
	var attachErr error
	err = serve(ctx, realHost(), cfg, false, serveOptions{trace: traceOf(ctx)}, func(res Result) error {
		if res.Error != "" {
			attachErr = errors.New(res.Error)
			for _, w := range res.Warnings {
				fmt.Fprintf(os.Stderr, "nbdloop: %s\n", w)
			}
			return nil
		}
		ready(res.State.device(), res.Warnings)
		return nil
	})
	if attachErr != nil {
		return attachErr
	}
	return err
}

// ioFlusherEnv marks a process that re-executed itself with
// PR_SET_IO_FLUSHER set, so it does not try again.
const ioFlusherEnv = "NBDLOOP_IO_FLUSHER"

// ReexecWithIOFlusher re-executes the current command line from a thread
// flagged with PR_SET_IO_FLUSHER, so that every thread of the new image
// inherits the flag (see protect.go). `attach --foreground` calls it before
// serving. It returns only if the flag cannot be set or exec fails, and then
// the caller carries on unflagged.
func ReexecWithIOFlusher() {
	if os.Getenv(ioFlusherEnv) != "" {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if unix.Prctl(unix.PR_SET_IO_FLUSHER, 1, 0, 0, 0) != nil {
			return
		}
		syscall.Exec(exe, os.Args, append(os.Environ(), ioFlusherEnv+"=1"))
	}()
	<-done
}
