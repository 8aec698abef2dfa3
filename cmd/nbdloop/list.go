package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// list prints the attached devices as losetup --list does: a table of
// columns chosen with -O, with or without headings (-n), aligned or raw.

// listColumn is a column of list's table.
type listColumn struct {
	name  string // as -O takes it
	help  string // for list --help and the man page
	value func(d *attach.Device) string
}

// listColumns are list's columns; the first defaultColumns of them are
// shown without -O.
var listColumns = []listColumn{
	{"NAME", "device name", func(d *attach.Device) string { return d.Name }},
	{"SIZE", "size in bytes, with binary suffixes", func(d *attach.Device) string { return bytesize.Format(d.Size) }},
	{"SOURCE", "what the device serves (foreign devices: their backend id)", func(d *attach.Device) string { return d.Source }},
	{"RO", "read-only", func(d *attach.Device) string { return yesNo(d.RO) }},
	{"PID", "server process", func(d *attach.Device) string { return strconv.Itoa(d.PID) }},
	{"STATE", "running; restarting (the server died and its supervisor is starting a new one); dead (the server is gone: nbdloop restart, or detach it; REASON says why); foreign (not nbdloop's)",
		func(d *attach.Device) string { return stateText(*d) }},
	{"CONNECTIONS", "sockets between kernel and server", func(d *attach.Device) string { return strconv.Itoa(d.Connections) }},
	{"RESTARTS", "servers started after the first (LAST-EXIT says why)", func(d *attach.Device) string { return strconv.Itoa(d.Restarts) }},
	{"FORMAT", "format of the source (raw, qcow2, xz, memory, ...)", func(d *attach.Device) string { return d.Format }},
	{"LOG-SEC", "logical sector size (--block-size)", func(d *attach.Device) string { return countOrEmpty(d.BlockSize) }},
	{"BACKEND", "the device's backend identifier", func(d *attach.Device) string { return d.Backend }},
	{"SUPERVISOR", "supervisor process (empty: --no-restart)", func(d *attach.Device) string { return countOrEmpty(int64(d.Supervisor)) }},
	{"PARTITIONS", "partition devices, comma-separated", func(d *attach.Device) string { return strings.Join(d.Partitions, ",") }},
	{"MOUNTS", "mount points of the device and its partitions", func(d *attach.Device) string { return strings.Join(d.Mounts, ",") }},
	{"FILTERS", "--filter specs, comma-separated", func(d *attach.Device) string { return strings.Join(d.Filters, ",") }},
	{"LAST-EXIT", "how the previous server ended", func(d *attach.Device) string { return d.LastExit }},
	{"REASON", "why a dead device is dead", func(d *attach.Device) string { return d.Reason }},
}

const defaultColumns = 8

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func countOrEmpty(n int64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

// columnsHelp lists the columns for list --help and the man page: a
// definition list, its text wrapped at 80 columns.
func columnsHelp() string {
	var b strings.Builder
	b.WriteString("COLUMNS (-O; the first eight are the default):")
	for _, c := range listColumns {
		line := fmt.Sprintf("\n  %-12s", c.name)
		for _, w := range strings.Fields(c.help) {
			if len(line)+1+len(w) > 80 {
				b.WriteString(line)
				line = "\n" + strings.Repeat(" ", 15)
				line += w
				continue
			}
			line += " " + w
		}
		b.WriteString(line)
	}
	return b.String()
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "list attached nbd devices",
		UsageText: "nbdloop list [-n] [-O COLUMNS] [--raw] [--associated FILE] [DEVICE...]\nnbdloop list --json [--associated FILE] [DEVICE...]\nnbdloop list --served [-n | --json]",
		Description: "Lists every attached nbd device, including those attached by nbd-client or\n" +
			"qemu-nbd, or the DEVICEs given, or with --associated those that serve FILE.\n" +
			"nbdloop without a command lists them too.\n\n" + columnsHelp() + "\n\n" + servedHelp,
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("list: %v (see nbdloop list --help)", err)
		},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON: {\"devices\":[...]}, every field"},
			&cli.BoolFlag{Name: "noheadings", Aliases: []string{"n"}, Usage: "print no headings"},
			&cli.StringFlag{Name: "output", Aliases: []string{"O"}, Usage: "print the `COLUMNS` named, comma-separated (+COLUMNS: the default ones and these)"},
			&cli.BoolFlag{Name: "raw", Usage: "print the columns unaligned, separated by one space (spaces and backslashes in values as \\x20 and \\x5c)"},
			&cli.BoolFlag{Name: "served", Usage: "list the background serves (serve --background) instead of devices"},
			&cli.StringFlag{Name: "associated", Aliases: []string{"j"}, Usage: "list only the devices that serve `FILE` (the same file: device and inode, not name)"},
		},
		BashComplete: completeDevices,
		Action:       doList,
	}
}

// listOptions are list's flags for the table.
type listOptions struct {
	columns    []listColumn
	noHeadings bool
	raw        bool
}

// parseColumns reads -O: column names, comma-separated, in any case; a
// leading + adds them to the default columns.
func parseColumns(spec string) ([]listColumn, error) {
	if spec == "" {
		return listColumns[:defaultColumns], nil
	}
	var cols []listColumn
	if rest, ok := strings.CutPrefix(spec, "+"); ok {
		cols, spec = append(cols, listColumns[:defaultColumns]...), rest
	}
	for _, name := range strings.Split(spec, ",") {
		i := columnIndex(name)
		if i < 0 {
			names := make([]string, len(listColumns))
			for j, c := range listColumns {
				names[j] = c.name
			}
			return nil, usageError("list: -O %s: unknown column %q (columns: %s)", spec, name, strings.Join(names, ","))
		}
		cols = append(cols, listColumns[i])
	}
	return cols, nil
}

func columnIndex(name string) int {
	for i, c := range listColumns {
		if strings.EqualFold(c.name, strings.TrimSpace(name)) {
			return i
		}
	}
	return -1
}

// writeList prints devs as a table.
func writeList(w io.Writer, devs []attach.Device, o listOptions) error {
	if len(devs) == 0 {
		return nil
	}
	rows := make([][]string, 0, len(devs)+1)
	if !o.noHeadings {
		var h []string
		for _, c := range o.columns {
			h = append(h, c.name)
		}
		rows = append(rows, h)
	}
	for i := range devs {
		var r []string
		for _, c := range o.columns {
			r = append(r, c.value(&devs[i]))
		}
		rows = append(rows, r)
	}
	if o.raw {
		esc := strings.NewReplacer(`\`, `\x5c`, " ", `\x20`, "\t", `\x09`, "\n", `\x0a`)
		for _, r := range rows {
			for i := range r {
				r[i] = esc.Replace(r[i])
			}
			if _, err := fmt.Fprintln(w, strings.Join(r, " ")); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// servesFile returns a test for the devices that serve the file at path:
// the same device and inode as one of the files they were attached with.
func servesFile(path string) (func(d *attach.Device) bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("list: --associated %s: %w (check the path)", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("list: --associated %s: no device and inode", path)
	}
	return func(d *attach.Device) bool {
		for _, f := range d.Files {
			if f.Dev == uint64(st.Dev) && f.Ino == st.Ino {
				return true
			}
		}
		return false
	}, nil
}

// listNamed lists the nbd devices of indices and the ublk devices named in
// ublks; every device when both are empty.
func listNamed(indices []int, ublks map[string]bool) ([]attach.Device, error) {
	if len(ublks) == 0 {
		return attach.List(indices)
	}
	var devs []attach.Device
	if len(indices) > 0 {
		nbds, err := attach.List(indices)
		if err != nil {
			return nil, err
		}
		devs = nbds
	}
	every, err := attach.List(nil)
	if err != nil {
		return nil, err
	}
	for _, d := range every {
		if d.Driver == attach.DriverUblk && ublks[d.Name] {
			devs = append(devs, d)
		}
	}
	return devs, nil
}

func doList(c *cli.Context) error {
	if c.Bool("served") {
		return doListServed(c)
	}
	var indices []int
	ublks := map[string]bool{} // /dev/ublkbN named
	for _, a := range c.Args().Slice() {
		if id, ok := attach.ParseUblkDevice(a); ok {
			ublks[fmt.Sprintf("/dev/ublkb%d", id)] = true
			continue
		}
		idx, err := attach.ParseDevice(a)
		if err != nil {
			return usageError("list: %v", err)
		}
		indices = append(indices, idx)
	}
	if c.IsSet("output") && c.String("output") == "" {
		return usageError("list: -O: no columns given (e.g. -O NAME,SOURCE; see nbdloop list --help)")
	}
	cols, err := parseColumns(c.String("output"))
	if err != nil {
		return err
	}
	if c.Bool("json") && (c.IsSet("output") || c.Bool("noheadings") || c.Bool("raw")) {
		return usageError("list: --json prints every field, without headings (omit -O, -n and --raw)")
	}
	keep := func(*attach.Device) bool { return true }
	if f := c.String("associated"); f != "" {
		if keep, err = servesFile(f); err != nil {
			return err
		}
	}
	all, err := listNamed(indices, ublks)
	if err != nil {
		return err
	}
	devs := []attach.Device{}
	for i := range all {
		if keep(&all[i]) {
			devs = append(devs, all[i])
		}
	}
	if c.Bool("json") {
		b, err := json.MarshalIndent(struct {
			Devices []attach.Device `json:"devices"`
		}{devs}, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(c.App.Writer, string(b))
		return nil
	}
	return writeList(c.App.Writer, devs, listOptions{columns: cols, noHeadings: c.Bool("noheadings"), raw: c.Bool("raw")})
}
