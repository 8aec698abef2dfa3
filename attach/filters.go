package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/kernel"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/ublk"
)

// filterSpecs parses the --filter specs.
func (c *Config) filterSpecs() ([]filters.Spec, error) {
	specs := make([]filters.Spec, 0, len(c.Filters))
	for _, f := range c.Filters {
		s, err := filters.Parse(f)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// sourceReadOnly reports whether the source must be opened read-only: with
// -r, or when a cow filter keeps every write away from it.
func (c *Config) sourceReadOnly() bool {
	specs, err := c.filterSpecs()
	return c.ReadOnly || (err == nil && filters.IsolatesSource(specs))
}

// openFilters wraps src in cfg's filters. On error src is left open.
func openFilters(src sources.Source, cfg Config, restarted bool) (*filters.Stack, error) {
	specs, err := cfg.filterSpecs()
	if err != nil {
		return nil, err
	}
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	return filters.Open(src, specs, filters.Env{Logf: logger.Printf, Restarted: restarted})
}

// statsPath is the stats file of /dev/nbdN in dir, ublkStatsPath that of
// /dev/ublkbN, and statsPathOf that of st's device.
func statsPath(dir string, index int) string {
	return filepath.Join(dir, fmt.Sprintf("nbd%d.stats.json", index))
}

func ublkStatsPath(dir string, id int) string {
	return filepath.Join(dir, fmt.Sprintf("ublkb%d.stats.json", id))
}

func statsPathOf(dir string, st *State) string {
	if st.Config.isUblk() {
		return ublkStatsPath(dir, st.Config.Index)
	}
	return statsPath(dir, st.Config.Index)
}

// startStats writes the stack's statistics to the stats file now, every
// interval, and once more when the returned function is called (at exit).
// Without a stats filter it does nothing.
func startStats(dir string, st *State, stack *filters.Stack, logf func(string, ...any)) (stop func()) {
	s := stack.Stats()
	if s == nil {
		return func() {}
	}
	write := func() {
		snap := s.Snapshot()
		snap.Device, snap.BackendID, snap.PID = st.Name(), st.BackendID, st.PID
		if err := writeStats(dir, statsPathOf(dir, st), &snap); err != nil {
			logf("%s: stats: %v", st.Name(), err)
		}
	}
	write()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		if s.Interval() <= 0 {
			<-done
			return
		}
		t := time.NewTicker(s.Interval())
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				write()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		write()
	}
}

// writeStats replaces the stats file path in dir atomically, so readers
// never see half of it.
func writeStats(dir, path string, snap *filters.StatsSnapshot) error {
	b, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".stats*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// readStats reads the stats file of /dev/nbd<index>, which must have been
// written for backendID when that is not empty.
func readStats(dir string, index int, backendID string) (*filters.StatsSnapshot, error) {
	return readStatsFile(statsPath(dir, index), deviceName(index), backendID)
}

// readStatsFile reads the stats file path of dev, which must have been
// written for backendID when that is not empty.
func readStatsFile(path, dev, backendID string) (*filters.StatsSnapshot, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoStats
	}
	if err != nil {
		return nil, err
	}
	var snap filters.StatsSnapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if backendID != "" && snap.BackendID != backendID {
		return nil, ErrNoStats // left by an earlier attach of the same device
	}
	if snap.Device == "" {
		snap.Device = dev
	}
	return &snap, nil
}

// ErrNoStats is wrapped by ReadStats and DetachStats for a device whose
// server keeps no statistics.
var ErrNoStats = errors.New("no statistics (attach with --filter stats to keep them)")

// ReadStats returns the statistics that the server of /dev/nbdN keeps up to
// date (every interval of its stats filter), checking that they belong to
// the device attached now.
func ReadStats(index int) (*filters.StatsSnapshot, error) {
	dev := fmt.Sprintf("/dev/nbd%d", index)
	sys := kernel.Sysfs{}
	if _, ok, _ := sys.PID(index); !ok {
		return nil, fmt.Errorf("%s: %w", dev, ErrNotAttached)
	}
	backend, _ := sys.Backend(index)
	if backend == "" {
		return nil, fmt.Errorf("%s: %w", dev, ErrNoStats)
	}
	snap, err := readStats(StateDir(), index, backend)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	}
	return snap, nil
}

// ReadUblkStats is ReadStats for /dev/ublkb<id>, checked against the
// device's state record.
func ReadUblkStats(id int) (*filters.StatsSnapshot, error) {
	dir, dev := StateDir(), ublk.BlockPath(id)
	st := readUblkState(dir, id)
	if st == nil || !st.server().alive() {
		return nil, fmt.Errorf("%s: %w", dev, ErrNotAttached)
	}
	snap, err := readStatsFile(ublkStatsPath(dir, id), dev, st.BackendID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	}
	return snap, nil
}

// DetachUblkStats is DetachUblk, and then returns the final statistics
// the server wrote as it exited, or nil when it kept none.
func DetachUblkStats(ctx context.Context, id int, force bool) (*filters.StatsSnapshot, error) {
	dir := StateDir()
	backend := ""
	if st := readUblkState(dir, id); st != nil {
		backend = st.BackendID
	}
	path := ublkStatsPath(dir, id)
	var snap *filters.StatsSnapshot
	err := detachUblk(ctx, id, force, func() {
		if backend != "" {
			snap, _ = readStatsFile(path, ublk.BlockPath(id), backend)
		}
	})
	return snap, err
}

// DetachStats is Detach, and then returns the final statistics the server
// wrote as it exited, or nil when it kept none. It removes the stats file.
func DetachStats(ctx context.Context, index int, force bool) (*filters.StatsSnapshot, error) {
	h := realHost()
	dir := h.stateDir
	backend, _ := h.sys.Backend(index)
	if err := h.detach(ctx, index, force); err != nil {
		return nil, err
	}
	defer os.Remove(statsPath(dir, index))
	if backend == "" {
		return nil, nil
	}
	snap, err := readStats(dir, index, backend)
	if errors.Is(err, ErrNoStats) {
		return nil, nil
	}
	return snap, err
}
