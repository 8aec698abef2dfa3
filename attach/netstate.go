package attach

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// NetState is the record of a background `nbdloop serve` (serve-PID.json
// in the state directory, PID being its supervisor's): where it listens,
// what it serves, and the processes serving it. The supervisor writes it
// once the first server listens and at every restart, and removes it when
// the serve is stopped.
type NetState struct {
	// Listen are the addresses listened on, as "tcp HOST:PORT" and
	// "unix PATH"; a restarted server listens on the same ones (the port
	// chosen for :0 included).
	Listen []string `json:"listen"`
	// Exports are the exports' names and SOURCEs.
	Exports []NetExportState `json:"exports"`
	PID     int              `json:"pid"`
	// Supervisor is the pid of the process that restarts the server.
	Supervisor int       `json:"supervisor_pid"`
	Started    time.Time `json:"started"` // when this server started serving
	Restarts   int       `json:"restarts"`
	LastExit   string    `json:"last_exit,omitempty"`
	// DeadReason is set when the supervisor gave up restarting.
	DeadReason string `json:"dead_reason,omitempty"`
	// Log is the file the server and the supervisor log to.
	Log string `json:"log"`
	// State is filled in by ListServed: running, restarting or dead.
	State string `json:"state,omitempty"`
	// Clients is filled in by ListServed for a running serve: the clients
	// connected to its exports (each export's count is its Clients), as
	// the server published them (NetClients).
	Clients int `json:"clients"`

	PIDStart        uint64 `json:"pid_start,omitempty"`
	SupervisorStart uint64 `json:"supervisor_start,omitempty"`
}

// NetExportState is one export of a NetState.
type NetExportState struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	// Format is what the source is served as (raw, qcow2, ...): a format
	// that keeps written data in the server process is not restarted.
	Format string `json:"format,omitempty"`
	// Clients is filled in by ListServed: the clients connected to this
	// export.
	Clients int `json:"clients"`
}

func netStatePath(dir string, supervisor int) string {
	return filepath.Join(dir, fmt.Sprintf("serve-%d.json", supervisor))
}

func netLogPath(dir string, supervisor int) string {
	return filepath.Join(dir, fmt.Sprintf("serve-%d.log", supervisor))
}

// writeNetState writes the record atomically, as writeState does.
func writeNetState(dir string, st *NetState) error {
	return writeRecord(dir, netStatePath(dir, st.Supervisor), st)
}

// ListServed returns the records of the background serves, by supervisor
// pid, each with its State: running (the server is alive), restarting
// (its supervisor is starting another) or dead (the supervisor gave up,
// REASON in DeadReason, or is gone: the record is stale).
func ListServed() ([]NetState, error) {
	dir := StateDir()
	paths, err := filepath.Glob(filepath.Join(dir, "serve-*.json"))
	if err != nil {
		return nil, err
	}
	list := []NetState{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var st NetState
		if json.Unmarshal(b, &st) != nil || p != netStatePath(dir, st.Supervisor) {
			continue
		}
		switch {
		case !(procRef{st.Supervisor, st.SupervisorStart}).alive():
			st.State = StateDead
			if st.DeadReason == "" {
				st.DeadReason = "the supervisor is gone"
			}
		case st.DeadReason != "":
			st.State = StateDead
		case (procRef{st.PID, st.PIDStart}).alive():
			st.State = StateRunning
			st.countClients(dir)
		default:
			st.State = StateRestarting
		}
		list = append(list, st)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Supervisor < list[j].Supervisor })
	return list, nil
}

// countClients fills in the client counts the running server published.
func (st *NetState) countClients(dir string) {
	counts, ok := readNetClients(dir, st.Supervisor, st.PID)
	if !ok {
		return
	}
	for i := range st.Exports {
		n := max(counts[st.Exports[i].Name], 0)
		st.Exports[i].Clients = n
		st.Clients += n
	}
}

// matches reports whether target names the serve: one of its addresses
// (with or without "tcp " or "unix "), or its supervisor's pid.
func (st *NetState) matches(target string) bool {
	if target == fmt.Sprint(st.Supervisor) {
		return true
	}
	for _, l := range st.Listen {
		_, addr, _ := strings.Cut(l, " ")
		if target == l || target == addr {
			return true
		}
	}
	return false
}
