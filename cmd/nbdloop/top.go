package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/pictures"
)

func topCommand() *cli.Command {
	return &cli.Command{
		Name:      "top",
		Usage:     "show live request rates, latency and a map of recent I/O of a device attached with --filter stats",
		UsageText: "nbdloop top [--once] DEVICE",
		Description: "Reads the statistics that the server of DEVICE writes every second (attach it\n" +
			"with --filter stats) and shows, for the last interval: requests and MiB per second\n" +
			"of each kind, the mean number of requests in flight (queue depth), latency\n" +
			"percentiles since attach, and a 16x16 map of where the I/O went, the device laid\n" +
			"out along a Hilbert curve as nbdloop draw does (r read, w write, t trim or zero;\n" +
			"capitals where it was busiest). On a terminal the view is redrawn every second\n" +
			"until interrupted; with --once, or when stdout is not a terminal, it prints one\n" +
			"plain view and exits.",
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("top: %v (see nbdloop top --help)", err)
		},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "once", Usage: "print one plain view and exit"},
		},
		BashComplete: completeDevices,
		Action:       doTop,
	}
}

// topWait bounds how long top waits for the server to write new
// statistics: a few of its default intervals.
const topWait = 5 * time.Second

func doTop(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("top: one DEVICE expected (e.g. nbdloop top /dev/nbd0)")
	}
	read, err := statsReader(c.Args().First())
	if err != nil {
		return usageError("top: %v", err)
	}
	w := c.App.Writer
	live := !c.Bool("once") && isTerminal(w)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	prev, err := read()
	if err != nil {
		return fmt.Errorf("top: %w", err)
	}
	if live {
		fmt.Fprint(w, "\x1b[?25l") // hide the cursor while redrawing
		defer fmt.Fprint(w, "\x1b[?25h")
	}
	for {
		cur, err := nextStats(ctx, read, prev)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("top: %w", err)
		}
		view := topView(prev, cur, live)
		if !live {
			_, err := io.WriteString(w, view)
			return err
		}
		fmt.Fprint(w, "\x1b[H\x1b[2J"+view)
		prev = cur
	}
}

// nextStats waits until the server has written statistics newer than prev.
func nextStats(ctx context.Context, read func() (*filters.StatsSnapshot, error), prev *filters.StatsSnapshot) (*filters.StatsSnapshot, error) {
	deadline := time.Now().Add(topWait)
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		cur, err := read()
		if err != nil {
			return nil, err
		}
		if cur.Time.After(prev.Time) {
			return cur, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: the statistics were not updated for %v (attach with --filter stats:interval=1s)", cur.Device, topWait)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// topView formats what happened between two snapshots; with colour, the
// map uses ANSI 256-colour backgrounds instead of letters.
func topView(prev, cur *filters.StatsSnapshot, colour bool) string {
	var b strings.Builder
	dt := cur.Time.Sub(prev.Time).Seconds()
	depth := (cur.BusyUS - prev.BusyUS) / 1e6 / dt
	fmt.Fprintf(&b, "%s  up %s  queue depth %.1f  (last %.1f s; latency since attach)\n",
		cur.Device, cur.Time.Sub(cur.Started).Round(time.Second), math.Max(depth, 0), dt)
	fmt.Fprintf(&b, "%-6s %10s %9s %9s %9s %9s %9s %12s %7s\n", "OP", "REQ/S", "MIB/S", "P50_US", "P90_US", "P99_US", "MAX_US", "REQUESTS", "ERRORS")
	before := map[string]filters.OpStats{}
	for _, o := range prev.Ops {
		before[o.Op] = o
	}
	for _, o := range cur.Ops {
		p := before[o.Op]
		rate := float64(o.Count-min(p.Count, o.Count)) / dt
		mib := float64(o.Bytes-min(p.Bytes, o.Bytes)) / dt / (1 << 20)
		fmt.Fprintf(&b, "%-6s %10.1f %9.2f %9.1f %9.1f %9.1f %9.1f %12d %7d\n", o.Op, rate, mib,
			o.Latency.P50, o.Latency.P90, o.Latency.P99, o.Latency.Max, o.Count, o.Errors)
	}
	if cur.Heat == nil || prev.Heat == nil || len(cur.Heat.Read) != filters.HeatCells {
		return b.String()
	}
	fmt.Fprintf(&b, "recent I/O by offset: %s a cell, along a Hilbert curve from top left to top right\n",
		bytesize.Format(int64(cur.Heat.CellBytes)))
	b.WriteString(heatMap(prev.Heat, cur.Heat, colour))
	return b.String()
}

// heatMap draws the difference between two heat maps as a 16x16 square,
// two characters a cell.
func heatMap(prev, cur *filters.OffsetHeat, colour bool) string {
	const order = 4 // 16 x 16 = filters.HeatCells
	side := 1 << order
	type cell struct {
		class pictures.Class
		n     uint64
	}
	grid := make([]cell, side*side)
	var most uint64
	diff := func(a, b []uint64, i int) uint64 {
		if i >= len(a) || b[i] < a[i] {
			return b[i]
		}
		return b[i] - a[i]
	}
	for i := range filters.HeatCells {
		r, w, t := diff(prev.Read, cur.Read, i), diff(prev.Write, cur.Write, i), diff(prev.Trim, cur.Trim, i)
		c := cell{n: r + w + t}
		switch {
		case c.n == 0:
		case w >= t && w >= r:
			c.class = pictures.ClassWrite
		case t >= r:
			c.class = pictures.ClassTrim
		default:
			c.class = pictures.ClassRead
		}
		x, y := pictures.HilbertXY(order, uint64(i))
		grid[y*side+x] = c
		most = max(most, c.n)
	}
	// 256-colour shades, dim to bright, per class.
	shades := map[pictures.Class][4]int{
		pictures.ClassRead:  {17, 19, 27, 39},
		pictures.ClassWrite: {52, 88, 160, 196},
		pictures.ClassTrim:  {22, 28, 34, 46},
	}
	letters := map[pictures.Class]string{pictures.ClassRead: "r", pictures.ClassWrite: "w", pictures.ClassTrim: "t"}
	var b strings.Builder
	for y := range side {
		b.WriteString("  ")
		for x := range side {
			c := grid[y*side+x]
			if c.n == 0 {
				if colour {
					b.WriteString("\x1b[48;5;235m  \x1b[0m")
				} else {
					b.WriteString(". ")
				}
				continue
			}
			lvl := 3
			if most > 1 {
				lvl = int(3 * math.Log(float64(c.n)) / math.Log(float64(most)))
			}
			switch {
			case colour:
				fmt.Fprintf(&b, "\x1b[48;5;%dm  \x1b[0m", shades[c.class][lvl])
			case lvl == 3:
				b.WriteString(strings.ToUpper(letters[c.class]) + " ")
			default:
				b.WriteString(letters[c.class] + " ")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
