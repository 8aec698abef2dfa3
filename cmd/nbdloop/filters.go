package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// filterList collects repeated --filter values. It is a cli.Generic rather
// than a StringSliceFlag because urfave/cli splits slice values at commas,
// which separate a filter's options.
type filterList struct{ specs []string }

func (f *filterList) Set(s string) error { f.specs = append(f.specs, s); return nil }
func (f *filterList) String() string     { return strings.Join(f.specs, " ") }

func filterFlag() cli.Flag {
	return &cli.GenericFlag{
		Name:  "filter",
		Value: &filterList{},
		Usage: "wrap SOURCE in a filter: `NAME[:KEY=VALUE,...]` (repeatable; the first is nearest the kernel; see FILTERS)",
	}
}

// filterSpecs returns the --filter values in the order given.
func filterSpecs(c *cli.Context) []string {
	if f, ok := c.Generic("filter").(*filterList); ok {
		return f.specs
	}
	return nil
}

// completeAttach offers the values of --filter (the bash script passes the
// value typed so far before --generate-bash-completion), and flags
// otherwise.
func completeAttach(c *cli.Context) {
	completeFilterArgs(c.App.Writer, os.Args)
	if n := len(os.Args); n >= 4 && os.Args[n-3] == "--filter" {
		return
	}
	cli.DefaultCompleteWithFlags(c.Command)(c)
}

func completeFilterArgs(w io.Writer, args []string) {
	if n := len(args); n >= 4 && args[n-3] == "--filter" {
		for _, s := range filters.Complete(args[n-2]) {
			fmt.Fprintln(w, s)
		}
	}
}

func statsCommand() *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "print the request statistics of devices attached with --filter stats",
		UsageText: "nbdloop stats [--json] DEVICE...",
		Description: "Prints what the stats filter has counted since attach, as the server last\n" +
			"wrote it (every second by default): per kind of request, the number of\n" +
			"requests and errors, the bytes read or written, latency in microseconds\n" +
			"(mean, percentiles, maximum) and how many requests fell in each size range.\n" +
			"detach --stats prints the final numbers when it detaches.",
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("stats: %v (see nbdloop stats --help)", err)
		},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the statistics file as it is: one JSON object per device"},
		},
		BashComplete: completeDevices,
		Action:       doStats,
	}
}

// statsReader returns what reads the statistics of dev: /dev/nbdN, or
// /dev/ublkbN.
func statsReader(dev string) (func() (*filters.StatsSnapshot, error), error) {
	if id, ok := attach.ParseUblkDevice(dev); ok {
		return func() (*filters.StatsSnapshot, error) { return attach.ReadUblkStats(id) }, nil
	}
	idx, err := attach.ParseDevice(dev)
	if err != nil {
		return nil, err
	}
	return func() (*filters.StatsSnapshot, error) { return attach.ReadStats(idx) }, nil
}

func doStats(c *cli.Context) error {
	if c.NArg() == 0 {
		return usageError("stats: no DEVICE given (e.g. nbdloop stats /dev/nbd0)")
	}
	var reads []func() (*filters.StatsSnapshot, error)
	for _, a := range c.Args().Slice() {
		read, err := statsReader(a)
		if err != nil {
			return usageError("stats: %v", err)
		}
		reads = append(reads, read)
	}
	failed := 0
	for _, read := range reads {
		snap, err := read()
		if err != nil {
			fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s\n", oneLine(err.Error()))
			failed++
			continue
		}
		if err := printStats(c, snap); err != nil {
			return err
		}
	}
	if failed > 0 {
		return cli.Exit("", exitError)
	}
	return nil
}

// printStats prints one device's statistics, as JSON with --json.
func printStats(c *cli.Context, snap *filters.StatsSnapshot) error {
	w := c.App.Writer
	if c.Bool("json") {
		b, err := json.Marshal(snap)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	return writeStatsTable(w, snap)
}

func writeStatsTable(w io.Writer, snap *filters.StatsSnapshot) error {
	fmt.Fprintf(w, "%s: %s since %s\n", snap.Device, snap.Time.Sub(snap.Started).Round(1e6), snap.Started.Local().Format("2006-01-02 15:04:05"))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "OP\tCOUNT\tERRORS\tBYTES\tMEAN\tP50\tP90\tP99\tP99.9\tMAX\tSIZES\t")
	for _, o := range snap.Ops {
		l := o.Latency
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", o.Op, o.Count, o.Errors, bytesize.Format(int64(o.Bytes)),
			us(l.Mean), us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max), sizes(o.Sizes))
	}
	return tw.Flush()
}

// us renders microseconds with a unit.
func us(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 1000:
		return fmt.Sprintf("%.1fus", v)
	case v < 1e6:
		return fmt.Sprintf("%.1fms", v/1e3)
	}
	return fmt.Sprintf("%.2fs", v/1e6)
}

// sizes renders a size histogram as SIZE:COUNT pairs, largest count
// first, at most four.
func sizes(h []filters.SizeCount) string {
	if len(h) == 0 {
		return "-"
	}
	s := make([]filters.SizeCount, len(h))
	copy(s, h)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].Count > s[j-1].Count; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	var parts []string
	for i, b := range s {
		if i == 4 {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, fmt.Sprintf("%s:%d", strings.TrimSuffix(bytesize.Format(int64(b.MaxBytes)), "B"), b.Count))
	}
	return strings.Join(parts, ",")
}

// detachWithStats detaches /dev/nbdIDX (/dev/ublkbIDX when ublk) and, with
// print (detach --stats), prints the statistics its server wrote as it
// exited.
func detachWithStats(c *cli.Context, idx int, ublk, force, print bool) error {
	var snap *filters.StatsSnapshot
	var err error
	dev := fmt.Sprintf("/dev/nbd%d", idx)
	if ublk {
		dev = fmt.Sprintf("/dev/ublkb%d", idx)
		snap, err = attach.DetachUblkStats(c.Context, idx, force)
	} else {
		snap, err = attach.DetachStats(c.Context, idx, force)
	}
	if err != nil {
		return err
	}
	if !print {
		return nil
	}
	if snap == nil {
		fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s: %v\n", dev, attach.ErrNoStats)
		return nil
	}
	return printStats(c, snap)
}
