package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/nbdloop/nbdloop/attach"
)

// attach --verbose says what attach does, step by step, on stderr: what it
// made of the command line here, then (through attach.WithTrace) pinning
// the files, starting the supervisor and the server, and the server's own
// steps: probing the format, CONNECT, settling.

// verboseContext returns ctx with a trace that writes to w when verbose,
// and the trace (one that does nothing otherwise).
func verboseContext(ctx context.Context, w io.Writer, verbose bool) (context.Context, attach.Tracef) {
	if !verbose {
		return ctx, func(string, ...any) {}
	}
	trace := func(format string, args ...any) {
		fmt.Fprintf(w, "nbdloop: "+format+"\n", args...)
	}
	return attach.WithTrace(ctx, trace), trace
}

// describeConfig is the parsing step's line: the attach request as
// understood, defaults included.
func describeConfig(cfg attach.Config) string {
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	switch {
	case cfg.Layout != "":
		add("--%s of %s", cfg.Layout, strings.Join(cfg.Sources, " "))
	default:
		add("SOURCE %s", cfg.Source)
	}
	if cfg.Partition > 0 {
		add("partition %d", cfg.Partition)
	}
	switch {
	case cfg.Index >= 0 && cfg.Driver == attach.DriverUblk:
		add("device /dev/ublkb%d", cfg.Index)
	case cfg.Index >= 0:
		add("device /dev/nbd%d", cfg.Index)
	default:
		add("the first free device")
	}
	if cfg.ReadOnly {
		add("read-only")
	} else {
		add("read-write unless the source is read-only")
	}
	add("%d-byte blocks", cfg.BlockSize)
	add("%d connections", cfg.Connections)
	add("timeout %v, dead timeout %v", cfg.Timeout, cfg.DeadTimeout)
	if cfg.Offset != 0 {
		add("offset %d", cfg.Offset)
	}
	if cfg.SizeLimit != 0 {
		add("sizelimit %d", cfg.SizeLimit)
	}
	if cfg.DirectIO {
		add("direct I/O")
	}
	if cfg.Format != "" {
		add("format %s", cfg.Format)
	}
	for _, f := range cfg.Filters {
		add("filter %s", f)
	}
	if cfg.PartScan {
		add("partition scan")
	}
	if cfg.NoRestart {
		add("no restarts")
	}
	if cfg.NoLock {
		add("no locks")
	}
	return strings.Join(parts, ", ")
}
