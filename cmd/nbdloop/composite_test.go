package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestCompositeUsageErrors checks the command lines of --concat,
// --partitions and --partition that are wrong before anything is opened:
// one line, exit status 2.
func TestCompositeUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "two SOURCEs, no layout", args: []string{"attach", "a.img", "b.img"},
			want: "attach: one SOURCE expected, got 2: a.img b.img (to combine files: --concat or --partitions)"},
		{name: "concat without SOURCE", args: []string{"attach", "--concat"}, want: "attach: no SOURCE given"},
		{name: "concat and partitions", args: []string{"attach", "--concat", "--partitions", "a.img", "b.img"},
			want: "attach: --concat and --partitions exclude each other"},
		{name: "table without partitions", args: []string{"attach", "--table", "mbr", "a.img"},
			want: "attach: --table, --align, --type and --esp apply to --partitions"},
		{name: "esp with concat", args: []string{"attach", "--concat", "--esp", "a.img", "b.img"},
			want: "attach: --table, --align, --type and --esp apply to --partitions"},
		{name: "bad table", args: []string{"attach", "--partitions", "--table", "bsd", "a.img"},
			want: `attach: --table "bsd": use gpt or mbr`},
		{name: "bad align", args: []string{"attach", "--partitions", "--align", "3000", "a.img"},
			want: "attach: --align 3000: must be a power of two from the block size (512) to 1G"},
		{name: "align not a size", args: []string{"attach", "--partitions", "--align", "big", "a.img"},
			want: `attach: --align "big": not a size`},
		{name: "unknown type", args: []string{"attach", "--partitions", "--type", "2=fat64", "a.img", "b.img"},
			want: `attach: --type 2=fat64: unknown partition type "fat64"`},
		{name: "type of partition 3 of 2", args: []string{"attach", "--partitions", "--type", "3=swap", "a.img", "b.img"},
			want: "attach: --type 3=swap: no partition 3 (the disk will have 1, 2)"},
		{name: "type of the extended partition", args: []string{"attach", "--partitions", "--table", "mbr", "--type", "4=swap", "a", "b", "c", "d", "e"},
			want: "attach: --type 4=swap: no partition 4 (the disk will have 1, 2, 3, 5, 6; 4 is the extended partition)"},
		{name: "partition 0", args: []string{"attach", "--partition", "0", "disk.img"},
			want: "attach: --partition 0: partitions are numbered from 1"},
		{name: "partition not a number", args: []string{"attach", "--partition", "two", "disk.img"},
			want: `attach: invalid value "two" for flag -partition`},
		{name: "partition with offset", args: []string{"attach", "--partition", "2", "--offset", "1M", "disk.img"},
			want: "attach: --partition and --offset/--sizelimit exclude each other"},
		{name: "partition of a concat", args: []string{"attach", "--concat", "--partition", "2", "a.img", "b.img"},
			want: "attach: --concat: --partition applies to a single SOURCE"},
		{name: "concat with sizelimit", args: []string{"attach", "--concat", "--sizelimit", "1M", "a.img", "b.img"},
			want: "attach: --concat: --offset and --sizelimit apply to a single SOURCE"},
		{name: "bad second SOURCE", args: []string{"attach", "--concat", "a.img", "memory:12Q"},
			want: `attach: memory:12Q: unknown suffix "Q"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runArgs(t, tt.args...)
			if code != exitUsage || stdout != "" {
				t.Errorf("run(%q) = %d, stdout %q; want %d, nothing", tt.args, code, stdout, exitUsage)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "nbdloop: "+tt.want) {
				t.Errorf("run(%q) stderr = %q, want one line starting with %q", tt.args, stderr, "nbdloop: "+tt.want)
			}
		})
	}
}

// TestCompositeConfig checks the Config built from a valid command line.
func TestCompositeConfig(t *testing.T) {
	var got []string
	app := newApp(nil, nil)
	for _, c := range app.Commands {
		if c.Name != "attach" {
			continue
		}
		c.Action = func(c *cli.Context) error {
			cfg, err := configFromFlags(c)
			if err != nil {
				return err
			}
			got = append(got, strings.Join([]string{cfg.Source, cfg.Layout, strings.Join(cfg.Sources, "+"), cfg.Table,
				strings.Join(cfg.Types, ","), strconv.FormatInt(cfg.Align, 10), strconv.Itoa(cfg.Partition)}, "|"))
			return nil
		}
	}
	for _, args := range [][]string{
		{"attach", "--partitions", "-P", "--table", "mbr", "--align", "4K", "--type", "2=swap", "--type", "3=linux,5=esp", "a", "b", "c", "d", "e"},
		{"attach", "--concat", "a", "b"},
		{"attach", "--partition", "5", "disk.img"},
	} {
		if err := app.Run(append([]string{"nbdloop"}, args...)); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
	}
	want := []string{
		"a|partitions|a+b+c+d+e|mbr|2=swap,3=linux,5=esp|4096|0",
		"a|concat|a+b|||0|0",
		"disk.img|||||0|5",
	}
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Errorf("config %d = %q, want %q", i, got, want)
			break
		}
	}
}
