package attach

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The processes nbdloop re-executes itself as, and what passes from parent
// to child: the Config and the record taken over in the environment, the
// result pipe on descriptor resultFD, a RAM disk's memfd on memFD. The
// child reports Progress of long work while it opens the source, then one
// Result, on the pipe, and closes it.

// ServeCommand and SuperviseCommand are the hidden argv[1] of the server
// and the supervisor processes.
const (
	ServeCommand     = "__serve"
	SuperviseCommand = "__supervise"
)

// The child's environment.
const (
	serveEnv    = "NBDLOOP_SERVE_CONFIG"   // the Config, JSON
	resumeEnv   = "NBDLOOP_SERVE_RESUME"   // the State taken over (restart), JSON
	memEnv      = "NBDLOOP_MEMFD"          // "1": fd memFD is the RAM disk's memfd
	supervisEnv = "NBDLOOP_SUPERVISOR_PID" // a server's supervisor
)

// resultFD is the descriptor of the pipe on which a child sends its Result
// (the first of exec.Cmd.ExtraFiles); memFD, when memEnv says so, is a
// memory: device's memfd (the second). The state record names memFD so
// that `nbdloop restart` can take the memfd from a live server whose
// supervisor is gone (pidfd_getfd).
const (
	resultFD = 3
	memFD    = 4
)

// Result is what the server process reports to `attach` once: the device,
// or the error that stopped it, and warnings to print either way.
type Result struct {
	State    *State   `json:"state,omitempty"`
	Error    string   `json:"error,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// Exit statuses of a server process that the supervisor acts on.
const (
	exitDetached         = 0 // the device was detached: do not restart
	exitFailed           = 1 // the server could not start or serve
	exitConnectionsLost  = 3 // every connection ended without a DISC: restart
	exitRestartRequested = 4 // SIGUSR1 (nbdloop restart): restart
	exitResizeRequested  = 5 // SIGWINCH (nbdloop resize): restart at the new size
)

var (
	errConnectionsLost  = errors.New("every connection ended without a disconnect request")
	errRestartRequested = errors.New("restart requested")
	errResizeRequested  = errors.New("resize requested")
)

// child is what a server or supervisor process is started with.
type child struct {
	command string // ServeCommand or SuperviseCommand
	cfg     Config
	// takeover, when set, is the record of the device the child takes
	// over from a dead server (RECONFIGURE) instead of attaching a new one.
	takeover *State
	memFile  *os.File // a memory: device's memfd, or nil
	// supervisor is the pid of a server's supervisor (0: none).
	supervisor int
	// debug: the child traces its steps on this process's stderr
	// (debugEnv), as it does when debugEnv is set here.
	debug bool
	// progress, in the child, sends a Progress to the parent ahead of the
	// Result (see receiveResult); after the Result it does nothing.
	progress func(Progress)
}

// start starts the child with exe. A detached child (started by attach or
// restart) gets a session of its own, so it survives the shell and a
// Ctrl-C meant for a later job, is started from a thread flagged as an
// I/O flusher, and writes to stderr only with NBDLOOP_DEBUG; otherwise it
// shares this process's stderr. It returns the read end of the result pipe.
func (c child) start(exe string, detached bool) (*exec.Cmd, *os.File, error) {
	b, err := json.Marshal(c.cfg)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(exe, c.command)
	cmd.Env = append(os.Environ(), serveEnv+"="+string(b))
	if c.takeover != nil {
		tb, err := json.Marshal(c.takeover)
		if err != nil {
			return nil, nil, err
		}
		cmd.Env = append(cmd.Env, resumeEnv+"="+string(tb))
	}
	if c.supervisor != 0 {
		cmd.Env = append(cmd.Env, supervisEnv+"="+strconv.Itoa(c.supervisor))
	}
	debug := c.debug || os.Getenv(debugEnv) != ""
	if c.debug {
		cmd.Env = append(cmd.Env, debugEnv+"=1")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer w.Close()
	cmd.ExtraFiles = []*os.File{w}
	if c.memFile != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, c.memFile)
		cmd.Env = append(cmd.Env, memEnv+"=1")
	}
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if debug {
			cmd.Stderr = os.Stderr
		}
		_, err = startWithIOFlusher(cmd)
	} else {
		cmd.Stderr = os.Stderr
		err = cmd.Start()
	}
	if err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("starting the server process: %w", err)
	}
	return cmd, r, nil
}

// childFromEnv reads what the parent passed to this process (a child of
// the named command), clears it from the environment so that programs the
// process starts (exec: sources) inherit neither it nor the descriptors,
// and returns the function that sends the one Result (later calls do
// nothing). A bad environment is an error; the process then exits with 2.
func childFromEnv(command string) (child, func(Result) error, error) {
	c := child{command: command}
	if err := json.Unmarshal([]byte(os.Getenv(serveEnv)), &c.cfg); err != nil {
		return c, nil, fmt.Errorf("nbdloop: %s: bad configuration: %v", command, err)
	}
	if r := os.Getenv(resumeEnv); r != "" {
		c.takeover = new(State)
		if err := json.Unmarshal([]byte(r), c.takeover); err != nil {
			return c, nil, fmt.Errorf("nbdloop: %s: bad resume record: %v", command, err)
		}
	}
	inheritedMem := os.Getenv(memEnv) == "1"
	c.supervisor, _ = strconv.Atoi(os.Getenv(supervisEnv))
	for _, e := range []string{serveEnv, resumeEnv, memEnv, supervisEnv} {
		os.Unsetenv(e)
	}
	unix.CloseOnExec(resultFD)
	if inheritedMem {
		unix.CloseOnExec(memFD)
		c.memFile = os.NewFile(memFD, "memfd")
	}
	pipe := os.NewFile(resultFD, "result")
	var mu sync.Mutex
	reported := false
	c.progress = func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if !reported {
			sendProgress(pipe, p)
		}
	}
	report := func(res Result) error {
		mu.Lock()
		defer mu.Unlock()
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
	return c, report, nil
}
