package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/filters"
)

// TestFilterUsageErrors: bad --filter specs fail in the parent, before the
// root check, with one line and exit status 2.
func TestFilterUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--filter", "error:rate=1.5"}, `attach: error filter: rate "1.5" is out of range 0..1 or 0%..100%`},
		{[]string{"--filter", "erorr"}, `attach: unknown filter "erorr" (use one of error, delay, rate, cow, protect, readonly, log, stats)`},
		{[]string{"--filter", "error:rate=1,file=/tmp/x", "--filter", "delay:rat=1"}, `attach: delay filter: unknown key "rat" (keys: read, write, flush, trim, zero, all, jitter, after, file, seed)`},
		{[]string{"--filter", "log"}, "attach: log filter: file=PATH is required"},
		{[]string{"--filter", "cow:keep=true"}, "attach: cow filter: keep=true needs file=PATH"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runArgs(t, append(append([]string{"attach"}, tt.args...), "memory:1G")...)
			if code != exitUsage || stdout != "" {
				t.Errorf("exit %d, stdout %q, want %d and nothing", code, stdout, exitUsage)
			}
			if want := "nbdloop: " + tt.want; !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr = %q, want one line starting with %q", stderr, want)
			}
		})
	}
}

// TestFilterFlagKeepsCommas: --filter values are not split at commas and
// keep their order.
func TestFilterFlagKeepsCommas(t *testing.T) {
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	var got []string
	for _, c := range app.Commands {
		if c.Name == "attach" {
			c.Action = func(ctx *cli.Context) error {
				cfg, err := configFromFlags(ctx)
				got = cfg.Filters
				return err
			}
		}
	}
	err := app.Run([]string{"nbdloop", "attach", "--filter", "error:rate=1,file=/tmp/x", "--filter", "stats", "memory:1G"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"error:rate=1,file=/tmp/x", "stats"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Filters = %q, want %q", got, want)
	}
}

func TestHelpDocumentsFilters(t *testing.T) {
	_, stdout, _ := runArgs(t, "attach", "--help")
	for _, d := range filters.Table {
		if !strings.Contains(stdout, "  "+d.Name+": "+d.Summary) {
			t.Errorf("attach --help does not document the %s filter", d.Name)
		}
	}
	if !strings.Contains(stdout, "--filter NAME[:KEY=VALUE,...]") {
		t.Errorf("attach --help does not list --filter")
	}
	_, stdout, _ = runArgs(t, "--help")
	if !strings.Contains(stdout, "nbdloop stats [--json] DEVICE...") {
		t.Errorf("--help does not show the stats command")
	}
}

func TestCompleteFilterArgs(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"nbdloop", "attach", "--filter", "", "--generate-bash-completion"}, "error:\ndelay:\nrate:\ncow:\nprotect:\nreadonly:\nlog:\nstats:\n"},
		{[]string{"nbdloop", "attach", "--filter", "cow:k", "--generate-bash-completion"}, "cow:keep=\n"},
		{[]string{"nbdloop", "attach", "--fil", "--generate-bash-completion"}, ""},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		completeFilterArgs(&b, tt.args)
		if b.String() != tt.want {
			t.Errorf("completeFilterArgs(%q) = %q, want %q", tt.args, b.String(), tt.want)
		}
	}
}

func TestStatsTable(t *testing.T) {
	start := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	snap := &filters.StatsSnapshot{
		Device: "/dev/nbd3", Started: start, Time: start.Add(90 * time.Second),
		Ops: []filters.OpStats{
			{Op: "read", Count: 1000, Bytes: 4096000, Latency: filters.LatencyStats{Mean: 50.25, P50: 40, P90: 90, P99: 1500, P999: 2500000, Max: 3000000},
				Sizes: []filters.SizeCount{{MaxBytes: 4096, Count: 900}, {MaxBytes: 131072, Count: 100}}},
			{Op: "write", Count: 2, Errors: 2},
			{Op: "flush"},
		},
	}
	var b bytes.Buffer
	if err := writeStatsTable(&b, snap); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "/dev/nbd3: 1m30s since ") {
		t.Fatalf("table =\n%s", b.String())
	}
	wantFields := [][]string{
		{"OP", "COUNT", "ERRORS", "BYTES", "MEAN", "P50", "P90", "P99", "P99.9", "MAX", "SIZES"},
		{"read", "1000", "0", "3.9M", "50.2us", "40.0us", "90.0us", "1.5ms", "2.50s", "3.00s", "4K:900,128K:100"},
		{"write", "2", "2", "0B", "-", "-", "-", "-", "-", "-", "-"},
		{"flush", "0", "0", "0B", "-", "-", "-", "-", "-", "-", "-"},
	}
	for i, want := range wantFields {
		if got := strings.Fields(lines[i+1]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("line %d = %q, want fields %q", i+2, lines[i+1], want)
		}
	}
}
