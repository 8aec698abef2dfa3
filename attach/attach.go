package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ServeCommand is the hidden argv[1] with which nbdloop re-executes itself
// as a server process; the Config travels in the environment.
const (
	ServeCommand = "__serve"
	serveEnv     = "NBDLOOP_SERVE_CONFIG"
)

// resultFD is the descriptor of the pipe on which the server process sends
// its Result (the first of exec.Cmd.ExtraFiles).
const resultFD = 3

// Attach starts a detached server process for cfg and waits until it has
// attached the device or failed. On success the process keeps serving after
// Attach returns; on failure nothing is left behind: the server process
// undoes its own work before it reports an error, and it exits.
func Attach(ctx context.Context, cfg Config) (*Device, []string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	cfg, err := cfg.pinned()
	if err != nil {
		return nil, nil, err
	}
	// The supervisor starts the server and restarts it if it dies
	// (supervise.go); with --no-restart the server runs alone.
	command := SuperviseCommand
	if cfg.NoRestart {
		command = ServeCommand
	}
	return spawn(ctx, cfg, command, nil, nil)
}

// spawn starts `nbdloop command` in a session of its own with cfg (and env,
// extra descriptors from 4 on) and waits for its Result.
func spawn(ctx context.Context, cfg Config, command string, env []string, extra []*os.File) (*Device, []string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("finding the nbdloop executable: %w", err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	cmd := exec.Command(exe, command)
	cmd.Env = append(append(os.Environ(), serveEnv+"="+string(b)), env...)
	cmd.ExtraFiles = append([]*os.File{w}, extra...)
	// Its own session: the server must survive the shell that ran attach,
	// and a Ctrl-C meant for a later foreground job must not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if os.Getenv("NBDLOOP_DEBUG") != "" {
		cmd.Stderr = os.Stderr
	}
	if _, err := startWithIOFlusher(cmd); err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("starting the server process: %w", err)
	}
	w.Close()

	type readResult struct {
		res Result
		err error
	}
	got := make(chan readResult, 1)
	go func() {
		res, err := receiveResult(r)
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
	if rr.res.Error != "" {
		cmd.Wait()
		return nil, rr.res.Warnings, errors.New(rr.res.Error)
	}
	cmd.Process.Release()
	return rr.res.Device, rr.res.Warnings, nil
}

// receiveResult reads the one Result a server (or supervisor) process
// writes on its report pipe; a process that exits without writing one gives
// io.ErrUnexpectedEOF.
func receiveResult(r io.Reader) (Result, error) {
	var res Result
	b, err := io.ReadAll(r)
	if err == nil && len(b) == 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = json.Unmarshal(b, &res)
	}
	return res, err
}

// RunServerProcess is the body of the re-executed server process: it reads
// its Config from the environment, serves until detached or signalled and
// reports to the parent through descriptor 3. It returns the exit status.
func RunServerProcess() int {
	var cfg Config
	if err := json.Unmarshal([]byte(os.Getenv(serveEnv)), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "nbdloop: %s: bad configuration: %v\n", ServeCommand, err)
		return 2
	}
	var so serveOptions
	if r := os.Getenv(resumeEnv); r != "" {
		so.resume = new(resumeInfo)
		if err := json.Unmarshal([]byte(r), so.resume); err != nil {
			fmt.Fprintf(os.Stderr, "nbdloop: %s: bad resume record: %v\n", ServeCommand, err)
			return 2
		}
	}
	if os.Getenv(memEnv) == "1" {
		so.memFile = os.NewFile(memFD, "memfd")
	}
	so.supervisor, _ = strconv.Atoi(os.Getenv(supervisEnv))
	for _, e := range []string{serveEnv, resumeEnv, memEnv, supervisEnv} {
		os.Unsetenv(e)
	}
	// Programs the server starts (exec: sources) must not inherit the
	// report pipe, which would keep attach waiting, nor the RAM disk.
	unix.CloseOnExec(resultFD)
	if so.memFile != nil {
		unix.CloseOnExec(memFD)
	}
	pipe := os.NewFile(resultFD, "result")
	reported := false
	report := func(res Result) error {
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
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	if so.supervisor != 0 {
		restart := make(chan os.Signal, 1)
		signal.Notify(restart, syscall.SIGUSR1)
		so.restartRequested = restart
	}
	switch err := serve(ctx, cfg, true, so, report); {
	case err == nil:
		return exitDetached
	case errors.Is(err, errConnectionsLost):
		return exitConnectionsLost
	case errors.Is(err, errRestartRequested):
		return exitRestartRequested
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
	var attachErr error
	err = Serve(ctx, cfg, false, func(res Result) error {
		if res.Error != "" {
			attachErr = errors.New(res.Error)
			for _, w := range res.Warnings {
				fmt.Fprintf(os.Stderr, "nbdloop: %s\n", w)
			}
			return nil
		}
		ready(res.Device, res.Warnings)
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
