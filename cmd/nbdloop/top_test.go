package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/pictures"
)

// TestTopView: rates are differences over the interval, the queue depth
// is the busy time over it, and the map shows only what happened in
// between, at the Hilbert positions of the cells.
func TestTopView(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	heat := func() *filters.OffsetHeat {
		return &filters.OffsetHeat{CellBytes: 4096, Read: make([]uint64, filters.HeatCells),
			Write: make([]uint64, filters.HeatCells), Trim: make([]uint64, filters.HeatCells)}
	}
	prev := &filters.StatsSnapshot{Device: "/dev/nbd3", Time: t0.Add(10 * time.Second), Started: t0, BusyUS: 1e6, Heat: heat(),
		Ops: []filters.OpStats{{Op: "read", Count: 100, Bytes: 1 << 20}, {Op: "write", Count: 10}}}
	prev.Heat.Write[5] = 7 // before the interval: not shown
	cur := &filters.StatsSnapshot{Device: "/dev/nbd3", Time: t0.Add(12 * time.Second), Started: t0, BusyUS: 1e6 + 5e6, Heat: heat(),
		Ops: []filters.OpStats{
			{Op: "read", Count: 300, Bytes: 1<<20 + 8<<20, Latency: filters.LatencyStats{P50: 20, P90: 40, P99: 80, Max: 100}},
			{Op: "write", Count: 10, Errors: 2},
		}}
	cur.Heat.Write[5] = 7
	cur.Heat.Read[0] = 100 // the busiest cell: capital R
	cur.Heat.Read[1] = 1   // a quiet one: r
	cur.Heat.Trim[255] = 3
	view := topView(prev, cur, false)
	lines := strings.Split(view, "\n")
	if want := "/dev/nbd3  up 12s  queue depth 2.5  (last 2.0 s; latency since attach)"; lines[0] != want {
		t.Errorf("header = %q, want %q", lines[0], want)
	}
	fields := strings.Fields(lines[2])
	if want := []string{"read", "100.0", "4.00", "20.0", "40.0", "80.0", "100.0", "300", "0"}; strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Errorf("read line = %q, want fields %v", lines[2], want)
	}
	if f := strings.Fields(lines[3]); f[0] != "write" || f[1] != "0.0" || f[8] != "2" {
		t.Errorf("write line = %q, want no requests per second and 2 errors", lines[3])
	}
	grid := lines[5:21]
	at := func(d uint64) string {
		x, y := pictures.HilbertXY(4, d)
		return strings.Fields(grid[y])[x]
	}
	for d, want := range map[uint64]string{0: "R", 1: "r", 5: ".", 255: "t", 100: "."} {
		if got := at(d); got != want {
			t.Errorf("map cell %d = %q, want %q\n%s", d, got, want, strings.Join(grid, "\n"))
		}
	}
	if n := strings.Count(strings.Join(grid, ""), "."); n != filters.HeatCells-3 {
		t.Errorf("%d empty cells, want %d", n, filters.HeatCells-3)
	}
	if col := topView(prev, cur, true); !strings.Contains(col, "\x1b[48;5;39m") {
		t.Errorf("colour view has no bright read cell:\n%q", col)
	}
}
