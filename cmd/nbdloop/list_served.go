package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
)

// list --served: the background serves (serve --background), a table of
// their own; list without it shows devices only, as it always has.

// servedHelp describes list --served's table for list --help.
const servedHelp = "list --served shows the background serves (nbdloop serve --background) instead\n" +
	"of devices: LISTEN (the addresses, comma-separated), EXPORTS (NAME=SOURCE,\n" +
	"comma-separated; the default export's NAME is empty), PID (the server),\n" +
	"SUPERVISOR, STATE (running; restarting; dead: the supervisor gave up or is\n" +
	"gone, REASON says why), CLIENTS (connected now, after their handshake; with\n" +
	"several exports, each one's after the total: 3 (a:1,b:2)), RESTARTS and\n" +
	"REASON. With --json: {\"served\":[...]}, every field. nbdloop serve --stop\n" +
	"ADDRESS ends one."

func doListServed(c *cli.Context) error {
	if c.NArg() > 0 || c.IsSet("output") || c.Bool("raw") || c.IsSet("associated") {
		return usageError("list: --served takes no DEVICE, -O, --raw or --associated")
	}
	if c.Bool("json") && c.Bool("noheadings") {
		return usageError("list: --json prints every field, without headings (omit -n)")
	}
	served, err := attach.ListServed()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		b, err := json.MarshalIndent(struct {
			Served []attach.NetState `json:"served"`
		}{served}, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(c.App.Writer, string(b))
		return nil
	}
	return writeServed(c.App.Writer, served, c.Bool("noheadings"))
}

func writeServed(w io.Writer, served []attach.NetState, noHeadings bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if !noHeadings {
		fmt.Fprintln(tw, "LISTEN\tEXPORTS\tPID\tSUPERVISOR\tSTATE\tCLIENTS\tRESTARTS\tREASON")
	}
	for _, st := range served {
		var listen, exports, clients []string
		for _, l := range st.Listen {
			_, addr, _ := strings.Cut(l, " ")
			listen = append(listen, addr)
		}
		for _, e := range st.Exports {
			exports = append(exports, e.Name+"="+e.Source)
			clients = append(clients, e.Name+":"+strconv.Itoa(e.Clients))
		}
		count := strconv.Itoa(st.Clients)
		if len(st.Exports) > 1 {
			count += " (" + strings.Join(clients, ",") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", strings.Join(listen, ","), strings.Join(exports, ","),
			st.PID, st.Supervisor, st.State, count, strconv.Itoa(st.Restarts), st.DeadReason)
	}
	return tw.Flush()
}
