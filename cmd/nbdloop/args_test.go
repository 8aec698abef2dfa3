package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
)

// TestPermuteArgs: every command's options are moved in front of its
// operands, each with its value; "--" ends the options.
func TestPermuteArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string // after "nbdloop"
		want []string
	}{
		{name: "attach options after SOURCE", args: []string{"attach", "disk.img", "-r", "--json"}, want: []string{"attach", "-r", "--json", "disk.img"}},
		{name: "attach concat", args: []string{"attach", "--concat", "a.img", "b.img", "-r"}, want: []string{"attach", "--concat", "-r", "a.img", "b.img"}},
		{name: "value taken along", args: []string{"attach", "disk.img", "-b", "4096", "--offset", "1M"}, want: []string{"attach", "-b", "4096", "--offset", "1M", "disk.img"}},
		{name: "value after =", args: []string{"attach", "disk.img", "--block-size=4096"}, want: []string{"attach", "--block-size=4096", "disk.img"}},
		{name: "value that looks like an option", args: []string{"attach", "disk.img", "--timeout", "-5"}, want: []string{"attach", "--timeout", "-5", "disk.img"}},
		{name: "value that looks like a SOURCE", args: []string{"attach", "--run", "true", "disk.img"}, want: []string{"attach", "--run", "true", "disk.img"}},
		{name: "repeated filter", args: []string{"attach", "disk.img", "--filter", "delay:read=1ms", "--filter", "stats"}, want: []string{"attach", "--filter", "delay:read=1ms", "--filter", "stats", "disk.img"}},
		{name: "optional value of direct-io", args: []string{"attach", "disk.img", "--direct-io", "-r"}, want: []string{"attach", "--direct-io", "-r", "disk.img"}},
		{name: "double dash ends options", args: []string{"attach", "-r", "--", "-r"}, want: []string{"attach", "-r", "--", "-r"}},
		{name: "double dash after SOURCE", args: []string{"attach", "disk.img", "--", "--json"}, want: []string{"attach", "--", "disk.img", "--json"}},
		{name: "double dash without dashed operands", args: []string{"attach", "--", "disk.img"}, want: []string{"attach", "disk.img"}},
		{name: "value missing at the end", args: []string{"attach", "disk.img", "-b"}, want: []string{"attach", "-b"}},
		{name: "unknown option moves as a boolean", args: []string{"attach", "disk.img", "--bogus", "x"}, want: []string{"attach", "--bogus", "disk.img", "x"}},
		{name: "lone dash is an operand", args: []string{"pack", "-", "-o", "x.xz"}, want: []string{"pack", "-o", "x.xz", "-"}},
		{name: "bundled booleans", args: []string{"attach", "-rP", "disk.img"}, want: []string{"attach", "-r", "-P", "disk.img"}},
		{name: "bundled value in the word", args: []string{"attach", "disk.img", "-o1M"}, want: []string{"attach", "-o", "1M", "disk.img"}},
		{name: "bundled value in the next word", args: []string{"attach", "disk.img", "-rc", "2"}, want: []string{"attach", "-r", "-c", "2", "disk.img"}},
		{name: "bundle with an unknown letter", args: []string{"attach", "disk.img", "-rZ"}, want: []string{"attach", "-rZ", "disk.img"}},
		{name: "long name after one dash", args: []string{"attach", "disk.img", "-json"}, want: []string{"attach", "-json", "disk.img"}},
		{name: "detach", args: []string{"detach", "/dev/nbd0", "--force"}, want: []string{"detach", "--force", "/dev/nbd0"}},
		{name: "list", args: []string{"list", "/dev/nbd0", "--json"}, want: []string{"list", "--json", "/dev/nbd0"}},
		{name: "restart", args: []string{"restart", "nbd0", "--json"}, want: []string{"restart", "--json", "nbd0"}},
		{name: "stats", args: []string{"stats", "nbd0", "--json"}, want: []string{"stats", "--json", "nbd0"}},
		{name: "pack", args: []string{"pack", "disk.img", "-o", "x.xz", "--level", "3"}, want: []string{"pack", "-o", "x.xz", "--level", "3", "disk.img"}},
		{name: "draw", args: []string{"draw", "x.jsonl", "-o", "x.png", "--frames", "3"}, want: []string{"draw", "-o", "x.png", "--frames", "3", "x.jsonl"}},
		{name: "top", args: []string{"top", "nbd0", "--once"}, want: []string{"top", "--once", "nbd0"}},
		{name: "program options stay", args: []string{"--help", "attach", "x", "-r"}, want: []string{"--help", "attach", "-r", "x"}},
		{name: "help alone", args: []string{"attach", "x", "-r", "--help", "y"}, want: []string{"attach", "--help"}},
		{name: "short help alone", args: []string{"pack", "x", "-h"}, want: []string{"pack", "-h"}},
		{name: "help after -- is an operand", args: []string{"attach", "--", "--help"}, want: []string{"attach", "--", "--help"}},
		{name: "unknown command untouched", args: []string{"frob", "x", "-r"}, want: []string{"frob", "x", "-r"}},
		{name: "no command", args: []string{"-V"}, want: []string{"-V"}},
		{name: "completion untouched", args: []string{"attach", "x", "-", completionFlag}, want: []string{"attach", "x", "-", completionFlag}},
	}
	app := newApp(nil, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := permuteArgs(app, append([]string{"nbdloop"}, tt.args...))
			if want := append([]string{"nbdloop"}, tt.want...); !slices.Equal(got, want) {
				t.Errorf("permuteArgs(%q) = %q, want %q", tt.args, got, want)
			}
		})
	}
}

// parsedAttach runs the attach command line through run's parsing and
// returns the Config it makes and the --json flag, or the exit status and
// stderr of a command line that fails.
func parsedAttach(t *testing.T, args ...string) (attach.Config, bool, int, string) {
	t.Helper()
	var stderr strings.Builder
	app := newApp(&strings.Builder{}, &stderr)
	var cfg attach.Config
	var jsonOut bool
	for _, c := range app.Commands {
		if c.Name == "attach" {
			c.Action = func(c *cli.Context) (err error) {
				cfg, err = configFromFlags(c)
				jsonOut = c.Bool("json")
				return err
			}
		}
	}
	code := exitOK
	if err := app.Run(permuteArgs(app, append([]string{"nbdloop"}, args...))); err != nil {
		code = exitError
		if ec, ok := err.(cli.ExitCoder); ok {
			code = ec.ExitCode()
		}
		fmt.Fprintf(&stderr, "nbdloop: %s\n", oneLine(err.Error()))
	}
	return cfg, jsonOut, code, stderr.String()
}

// TestOptionsAnywhere: attach reads its options before, between and after
// its SOURCEs, and "--" makes the rest SOURCEs.
func TestOptionsAnywhere(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		source   string
		sources  []string
		readOnly bool
		json     bool
		partScan bool
	}{
		{name: "after SOURCE", args: []string{"attach", "disk.img", "-r", "--json"}, source: "disk.img", readOnly: true, json: true},
		{name: "between SOURCEs", args: []string{"attach", "--concat", "a.img", "-r", "b.img"}, source: "a.img", sources: []string{"a.img", "b.img"}, readOnly: true},
		{name: "after SOURCEs", args: []string{"attach", "--concat", "a.img", "b.img", "-r"}, source: "a.img", sources: []string{"a.img", "b.img"}, readOnly: true},
		{name: "file named -r after --", args: []string{"attach", "--json", "--", "-r"}, source: "-r", json: true},
		{name: "options before --, SOURCE after", args: []string{"attach", "disk.img", "-r", "--"}, source: "disk.img", readOnly: true},
		{name: "bundled short options", args: []string{"attach", "disk.img", "-rP"}, source: "disk.img", readOnly: true, partScan: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, jsonOut, code, stderr := parsedAttach(t, tt.args...)
			if code != exitOK {
				t.Fatalf("nbdloop %q: exit %d, %s", tt.args, code, stderr)
			}
			if cfg.PartScan != tt.partScan {
				t.Errorf("nbdloop %q: partscan %v, want %v", tt.args, cfg.PartScan, tt.partScan)
			}
			if cfg.Source != tt.source || !slices.Equal(cfg.Sources, tt.sources) || cfg.ReadOnly != tt.readOnly || jsonOut != tt.json {
				t.Errorf("nbdloop %q: source %q, sources %q, read-only %v, json %v; want %q, %q, %v, %v",
					tt.args, cfg.Source, cfg.Sources, cfg.ReadOnly, jsonOut, tt.source, tt.sources, tt.readOnly, tt.json)
			}
		})
	}
}

// TestOptionsAnywhereEveryCommand: each command reads an option given
// after its operands (the error is about the operand or the option, not a
// second operand).
func TestOptionsAnywhereEveryCommand(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string // the one stderr line
	}{
		{[]string{"attach", "disk.img", "-b", "1000"}, exitUsage, "nbdloop: attach: --block-size 1000: must be a power of two from 512 to 4096"},
		{[]string{"attach", "disk.img", "-r", "--bogus"}, exitUsage, "nbdloop: attach: flag provided but not defined: -bogus (see nbdloop attach --help)"},
		{[]string{"detach", "/dev/sda", "--force"}, exitUsage, "nbdloop: detach: /dev/sda: not an nbd device (use /dev/nbdN)"},
		{[]string{"detach", "nbd0", "-a"}, exitUsage, "nbdloop: detach: -a takes no DEVICE"},
		{[]string{"list", "/dev/sda", "--json"}, exitUsage, "nbdloop: list: /dev/sda: not an nbd device (use /dev/nbdN)"},
		{[]string{"restart", "/dev/sda", "--force"}, exitUsage, "nbdloop: restart: /dev/sda: not an nbd device (use /dev/nbdN)"},
		{[]string{"stats", "/dev/sda", "--json"}, exitUsage, "nbdloop: stats: /dev/sda: not an nbd device (use /dev/nbdN)"},
		{[]string{"top", "/dev/sda", "--once"}, exitUsage, "nbdloop: top: /dev/sda: not an nbd device (use /dev/nbdN)"},
		{[]string{"pack", "disk.img", "-o", "x.xz", "--level", "99"}, exitUsage, "nbdloop: pack: --level 99: xz levels are 0 to 9 (e.g. --level 6)"},
		{[]string{"draw", "x.jsonl", "-o", "x.png", "--frames", "0"}, exitUsage, "nbdloop: draw: --frames 0: out of range 1..1000"},
		{[]string{"completion", "zsh", "--bogus"}, exitUsage, "nbdloop: completion: flag provided but not defined: -bogus (see nbdloop completion --help)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runArgs(t, tt.args...)
			if code != tt.code || stdout != "" || stderr != tt.want+"\n" {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, nothing, %q", code, stdout, stderr, tt.code, tt.want)
			}
		})
	}
}

// TestDirectIO: --direct-io alone is on, =on and =off as losetup's, and
// it takes no separate value (the next word stays a SOURCE).
func TestDirectIO(t *testing.T) {
	tests := []struct {
		args   []string
		direct bool
		source string
	}{
		{[]string{"attach", "disk.img"}, false, "disk.img"},
		{[]string{"attach", "--direct-io", "disk.img"}, true, "disk.img"},
		{[]string{"attach", "disk.img", "--direct-io"}, true, "disk.img"},
		{[]string{"attach", "--direct-io=on", "disk.img"}, true, "disk.img"},
		{[]string{"attach", "--direct-io=off", "disk.img"}, false, "disk.img"},
		{[]string{"attach", "--direct-io", "--direct-io=off", "disk.img"}, false, "disk.img"},
		{[]string{"attach", "--show", "disk.img"}, false, "disk.img"},
	}
	for _, tt := range tests {
		cfg, _, code, stderr := parsedAttach(t, tt.args...)
		if code != exitOK || cfg.DirectIO != tt.direct || cfg.Source != tt.source {
			t.Errorf("nbdloop %q: exit %d (%s), direct I/O %v, source %q; want 0, %v, %q", tt.args, code, stderr, cfg.DirectIO, cfg.Source, tt.direct, tt.source)
		}
	}
	_, _, code, stderr := parsedAttach(t, "attach", "--direct-io=yes", "disk.img")
	if want := "nbdloop: attach: invalid boolean value \"yes\" for -direct-io: use on or off (see nbdloop attach --help)\n"; code != exitUsage || stderr != want {
		t.Errorf("--direct-io=yes: exit %d, stderr %q; want %d, %q", code, stderr, exitUsage, want)
	}
}
