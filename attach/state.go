package attach

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/ublk"
)

// DefaultStateDir holds one record per device attached by nbdloop. It is on
// tmpfs, so records vanish with the kernel's devices at reboot.
const DefaultStateDir = "/run/nbdloop"

// StateDir returns the state directory: $NBDLOOP_STATE_DIR when set (tests),
// otherwise DefaultStateDir.
func StateDir() string {
	if d := os.Getenv("NBDLOOP_STATE_DIR"); d != "" {
		return d
	}
	return DefaultStateDir
}

// State is the one record of a device attached by nbdloop: the attach
// request as served, what the kernel and the server made of it, and the
// processes serving it. The server writes it once its device is attached;
// `list` and the attach result show it (device); a restart takes it over to
// serve the same bytes again and re-attach them to the same device with
// RECONFIGURE (same index and backend identifier, new sockets) without
// unmounting.
type State struct {
	// Config is the attach request as served: Index is the device's, and
	// ReadOnly says whether the device is read-only.
	Config    Config `json:"config"`
	PID       int    `json:"pid"`
	BackendID string `json:"backend_id"`
	Desc      string `json:"desc"` // what `list` shows of the source
	// Format is what the source was served as (Config.Format, or what it
	// probed as): a restart that would serve it otherwise refuses.
	Format string `json:"format"`
	// Pin is the version of a URL's object that is served (Opened.Pin):
	// a restart refuses an object that changed.
	Pin         string `json:"pin,omitempty"`
	Size        int64  `json:"size"`
	ServerFlags uint64 `json:"server_flags"`
	// Partitions are the partition devices found at attach.
	Partitions []string  `json:"partitions,omitempty"`
	Started    time.Time `json:"started"`  // when this server started serving
	Attached   time.Time `json:"attached"` // when the device was first attached
	// Supervisor is the pid of the process that restarts the server when
	// it dies (supervise.go); 0 with --no-restart or --foreground.
	Supervisor int `json:"supervisor_pid,omitempty"`
	// MemFD is the descriptor of a memory: device's memfd in the server.
	MemFD int `json:"mem_fd,omitempty"`
	// Restarts counts the servers started after the first; LastExit says
	// how the previous one ended ("killed by signal 9", "exit status 2").
	Restarts int    `json:"restarts"`
	LastExit string `json:"last_exit,omitempty"`
	// DeadReason is set when the supervisor gave up restarting.
	DeadReason string `json:"dead_reason,omitempty"`
	// PIDStart and SupervisorStart are the start times of the server and
	// the supervisor (procRef): signals never reach a process that reused
	// one of their pids.
	PIDStart        uint64 `json:"pid_start,omitempty"`
	SupervisorStart uint64 `json:"supervisor_start,omitempty"`
	// Decoded is how far the background decode of a single-block image
	// is (nil: there is none, or it has not started).
	Decoded *Decoded `json:"decoded,omitempty"`
	// Resize is set only in the record a supervisor hands to the server it
	// starts after a resize request (resize.go): that server serves the
	// source at its new size and tells the kernel.
	Resize bool `json:"resize,omitempty"`
}

// Name is the device's path, /dev/nbdN (/dev/ublkbN for a ublk device).
func (st *State) Name() string {
	if st.Config.isUblk() {
		return ublk.BlockPath(st.Config.Index)
	}
	return deviceName(st.Config.Index)
}

func deviceName(index int) string { return fmt.Sprintf("/dev/nbd%d", index) }

// device is the record as attach and list show a running device.
func (st *State) device() *Device {
	cfg := st.Config
	return &Device{
		Name: st.Name(), Index: cfg.Index, Driver: cfg.Driver, Size: st.Size, Source: st.Desc, Format: st.Format,
		RO: cfg.ReadOnly, PID: st.PID, State: StateRunning, Connections: cfg.Connections,
		BlockSize: cfg.BlockSize, Backend: st.BackendID, Partitions: st.Partitions, Filters: cfg.Filters,
		Supervisor: st.Supervisor, Restarts: st.Restarts, LastExit: st.LastExit, Files: cfg.Files,
		Decoded:   st.Decoded,
		Autoclear: cfg.Autoclear, NbdTab: cfg.NbdTab,
	}
}

// takeover is the record a new server of the device starts from: the
// count of restarts and how the previous server ended are the caller's.
func (st *State) takeover(restarts int, lastExit string) *State {
	next := *st
	next.Restarts, next.LastExit, next.DeadReason, next.Resize = restarts, lastExit, "", false
	return &next
}

// server and supervisor name the record's processes for signals.
func (st *State) server() procRef     { return procRef{st.PID, st.PIDStart} }
func (st *State) supervisor() procRef { return procRef{st.Supervisor, st.SupervisorStart} }

func statePath(dir string, index int) string {
	return filepath.Join(dir, fmt.Sprintf("nbd%d.json", index))
}

// writeState writes the record atomically (temporary file + rename), so a
// concurrent `list` never reads half a record.
func writeState(dir string, st *State) error {
	return writeRecord(dir, statePath(dir, st.Config.Index), st)
}

// writeRecord writes v as JSON to path in the state directory dir,
// atomically (temporary file + rename).
func writeRecord(dir, path string, v any) error {
	if err := makeStateDir(dir); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// makeStateDir creates the state directory, private to root (0700): its
// records name the files served and its logs hold what exec: programs
// print. A directory left 0755 by an older nbdloop is tightened.
func makeStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	if fi, err := os.Lstat(dir); err == nil && fi.IsDir() && fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("state directory %s: %w", dir, err)
		}
	}
	return nil
}

// openLog opens the log file path in the state directory dir for
// appending: created 0600, never through a symbolic link, and made 0600 if
// an older nbdloop left it readable by others.
func openLog(dir, path string) (*os.File, error) {
	if err := makeStateDir(dir); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm() != 0o600 {
		f.Chmod(0o600)
	}
	return f, nil
}

// deviceLogPath is the log of device index in dir.
func deviceLogPath(dir string, index int) string {
	return filepath.Join(dir, fmt.Sprintf("nbd%d.log", index))
}

// redirectStderr sends this process's stderr to the log file path in the
// state directory dir, from then on (a daemon's panics included).
func redirectStderr(dir, path string) {
	if lf, err := openLog(dir, path); err == nil {
		unix.Dup2(int(lf.Fd()), 2)
		lf.Close()
	}
}

// readState returns the record for index, or nil when there is none or it is
// unreadable: `list` must tolerate stale or damaged state.
func readState(dir string, index int) *State {
	return readRecord(statePath(dir, index), index, nil)
}

// readRecord returns the record at path if it is the one of device index
// (and, when mine is not nil, mine says it is), or nil.
func readRecord(path string, index int, mine func(*State) bool) *State {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var st State
	if json.Unmarshal(b, &st) != nil || st.Config.Index != index || (mine != nil && !mine(&st)) {
		return nil
	}
	return &st
}

// removeState removes the record for index if it still belongs to pid (0:
// whoever wrote it), so a server that exits late cannot remove the record of
// a newer attach to the same device.
func removeState(dir string, index, pid int) error {
	return removeRecord(statePath(dir, index), pid, func() *State { return readState(dir, index) })
}

// removeRecord removes the record at path unless pid is not 0 and the
// record read returns (nil when missing or another device's) belongs to
// another process.
func removeRecord(path string, pid int, read func() *State) error {
	if pid != 0 {
		if st := read(); st != nil && st.PID != pid {
			return nil
		}
	}
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
