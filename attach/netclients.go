package attach

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/nbdloop/nbdloop/nbd"
)

// NetClients is what a background serve's server publishes of its
// clients (serve-PID.clients.json in the state directory, PID being its
// supervisor's): how many are connected to each export, in the
// transmission phase. The server writes it atomically when it starts
// listening and whenever a client comes or goes; ListServed reads it.
type NetClients struct {
	// PID is the server's: a file left by a server that died says nothing
	// about the one that replaced it.
	PID int `json:"pid"`
	// Exports are the client counts, by export name.
	Exports map[string]int `json:"exports"`
}

func netClientsPath(dir string, supervisor int) string {
	return filepath.Join(dir, fmt.Sprintf("serve-%d.clients.json", supervisor))
}

// clientCounter keeps a server's NetClients and writes it on every change.
type clientCounter struct {
	mu     sync.Mutex
	dir    string
	path   string
	counts NetClients
	logf   func(format string, args ...any)
	failed bool // a write failed: logged once
}

// newClientCounter returns the counter of the server pid, serving exports
// for the supervisor's record in dir, and writes its first file (no
// clients).
func newClientCounter(dir string, supervisor, pid int, exports []NetExportState, logf func(string, ...any)) *clientCounter {
	c := &clientCounter{dir: dir, path: netClientsPath(dir, supervisor), logf: logf,
		counts: NetClients{PID: pid, Exports: map[string]int{}}}
	for _, e := range exports {
		c.counts.Exports[e.Name] = 0
	}
	c.mu.Lock()
	c.writeLocked()
	c.mu.Unlock()
	return c
}

// change counts a client of e in (+1) or out (-1) and writes the file;
// nbd.ListenOptions.Clients.
func (c *clientCounter) change(e *nbd.Export, delta int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts.Exports[e.Name] += delta
	c.writeLocked()
}

// writeLocked writes the file; a failure is logged once, and list then
// shows the last count written.
func (c *clientCounter) writeLocked() {
	if err := writeRecord(c.dir, c.path, &c.counts); err != nil && !c.failed {
		c.failed = true
		c.logf("publishing the client count in %s: %v (list --served will not show it)", c.path, err)
	}
}

// readNetClients returns the client counts that server pid published for
// the supervisor's serve, or false when there are none from that server.
func readNetClients(dir string, supervisor, pid int) (map[string]int, bool) {
	b, err := os.ReadFile(netClientsPath(dir, supervisor))
	if err != nil {
		return nil, false
	}
	var nc NetClients
	if json.Unmarshal(b, &nc) != nil || nc.PID != pid {
		return nil, false
	}
	return nc.Exports, true
}
