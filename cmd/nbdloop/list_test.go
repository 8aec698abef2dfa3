package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/attach"
)

func listTestDevices() []attach.Device {
	return []attach.Device{
		{Name: "/dev/nbd0", Index: 0, Size: 1 << 30, Source: "/srv/my disk.img", PID: 100, State: attach.StateRunning, Connections: 4,
			Format: "raw", BlockSize: 512, Supervisor: 99, Partitions: []string{"nbd0p1", "nbd0p2"}},
		{Name: "/dev/nbd1", Index: 1, Size: 8 << 20, Source: "memory:8388608", RO: true, PID: 200, State: attach.StateDead, Connections: 1,
			Format: "memory", BlockSize: 4096, Restarts: 5, Reason: `gave up\after 5 restarts`},
	}
}

// TestListTable: the columns -O names, headings unless -n, aligned or
// (--raw) separated by one space with blanks escaped.
func TestListTable(t *testing.T) {
	tests := []struct {
		name    string
		columns string
		noHead  bool
		raw     bool
		want    string
	}{
		{name: "default", want: "" +
			"NAME       SIZE  SOURCE            RO   PID  STATE    CONNECTIONS  RESTARTS\n" +
			"/dev/nbd0  1G    /srv/my disk.img  no   100  running  4            0\n" +
			"/dev/nbd1  8M    memory:8388608    yes  200  dead     1            5\n"},
		{name: "noheadings", noHead: true, columns: "NAME,SIZE", want: "" +
			"/dev/nbd0  1G\n" +
			"/dev/nbd1  8M\n"},
		{name: "columns in any case and order", columns: "state,name,LOG-SEC", want: "" +
			"STATE    NAME       LOG-SEC\n" +
			"running  /dev/nbd0  512\n" +
			"dead     /dev/nbd1  4096\n"},
		{name: "plus adds to the default", columns: "+FORMAT", noHead: true, raw: true, want: "" +
			`/dev/nbd0 1G /srv/my\x20disk.img no 100 running 4 0 raw` + "\n" +
			`/dev/nbd1 8M memory:8388608 yes 200 dead 1 5 memory` + "\n"},
		{name: "raw", columns: "NAME,SUPERVISOR,PARTITIONS,REASON", raw: true, want: "" +
			"NAME SUPERVISOR PARTITIONS REASON\n" +
			"/dev/nbd0 99 nbd0p1,nbd0p2 \n" +
			`/dev/nbd1   gave\x20up\x5cafter\x205\x20restarts` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cols, err := parseColumns(tt.columns)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			if err := writeList(&b, listTestDevices(), listOptions{columns: cols, noHeadings: tt.noHead, raw: tt.raw}); err != nil {
				t.Fatal(err)
			}
			// tabwriter pads every cell but the last of a line.
			got := b.String()
			if !tt.raw {
				var lines []string
				for _, l := range strings.Split(got, "\n") {
					lines = append(lines, strings.TrimRight(l, " "))
				}
				got = strings.Join(lines, "\n")
			}
			if got != tt.want {
				t.Errorf("list -O %q (noheadings %v, raw %v):\n%s\nwant:\n%s", tt.columns, tt.noHead, tt.raw, got, tt.want)
			}
		})
	}
	var b strings.Builder
	if writeList(&b, nil, listOptions{columns: listColumns}); b.Len() != 0 {
		t.Errorf("no devices: printed %q, want nothing (as losetup)", b.String())
	}
}

// TestListUsageErrors: bad list options are usage errors, one line each.
func TestListUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"list", "-O", "NAME,FOO"}, `nbdloop: list: -O NAME,FOO: unknown column "FOO" (columns: NAME,SIZE,SOURCE,RO,PID,STATE,CONNECTIONS,RESTARTS,FORMAT,LOG-SEC,BACKEND,SUPERVISOR,PARTITIONS,MOUNTS,FILTERS,LAST-EXIT,REASON)`},
		{[]string{"list", "--output="}, "nbdloop: list: -O: no columns given (e.g. -O NAME,SOURCE; see nbdloop list --help)"},
		{[]string{"list", "-O", "NAME,"}, `nbdloop: list: -O NAME,: unknown column ""`},
		{[]string{"list", "-O"}, "nbdloop: list: flag needs an argument: -O (see nbdloop list --help)"},
		{[]string{"list", "--json", "-n"}, "nbdloop: list: --json prints every field, without headings (omit -O, -n and --raw)"},
		{[]string{"list", "--raw", "--json", "-O", "NAME"}, "nbdloop: list: --json prints every field, without headings (omit -O, -n and --raw)"},
		{[]string{"list", "--served", "/dev/nbd0"}, "nbdloop: list: --served takes no DEVICE, -O, --raw or --associated"},
		{[]string{"list", "--served", "-O", "NAME"}, "nbdloop: list: --served takes no DEVICE, -O, --raw or --associated"},
		{[]string{"list", "--served", "--json", "-n"}, "nbdloop: list: --json prints every field, without headings (omit -n)"},
		{[]string{"-O", "NAME"}, "nbdloop: flag provided but not defined: -O (see nbdloop --help)"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runArgs(t, tt.args...)
		if code != exitUsage || stdout != "" || !strings.HasPrefix(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("nbdloop %q: exit %d, stdout %q, stderr %q; want %d and the line %q", tt.args, code, stdout, stderr, exitUsage, tt.want)
		}
	}
}

// TestListAssociated: --associated FILE finds the devices attached with
// that file by device and inode: through another name (a hard link, a
// symbolic link, a rename) too, and not a new file at the old name.
func TestListAssociated(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ident := func(p string) attach.FileIdentity {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return attach.FileIdentity{Path: p, Dev: uint64(st.Dev), Ino: st.Ino}
	}
	devs := []attach.Device{
		{Name: "/dev/nbd0", Files: []attach.FileIdentity{ident(a)}},
		{Name: "/dev/nbd1", Files: []attach.FileIdentity{ident(b), ident(a)}}, // --concat b.img a.img
		{Name: "/dev/nbd2", Files: []attach.FileIdentity{ident(b)}},
		{Name: "/dev/nbd3"}, // foreign
	}
	if err := os.Link(a, filepath.Join(dir, "hard.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b.img", filepath.Join(dir, "sym.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(b, filepath.Join(dir, "moved.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, nil, 0o644); err != nil { // a new b.img
		t.Fatal(err)
	}
	tests := []struct {
		file string
		want string
	}{
		{"a.img", "/dev/nbd0 /dev/nbd1"},
		{"hard.img", "/dev/nbd0 /dev/nbd1"},
		{"moved.img", "/dev/nbd1 /dev/nbd2"},
		{"b.img", ""},
		{"sym.img", ""}, // it now leads to the new b.img
	}
	for _, tt := range tests {
		serves, err := servesFile(filepath.Join(dir, tt.file))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for i := range devs {
			if serves(&devs[i]) {
				names = append(names, devs[i].Name)
			}
		}
		if strings.Join(names, " ") != tt.want {
			t.Errorf("--associated %s = %q, want %q", tt.file, names, tt.want)
		}
	}
	missing := filepath.Join(dir, "missing.img")
	code, stdout, stderr := runArgs(t, "list", "--associated", missing)
	if want := "nbdloop: list: --associated " + missing + ": no such file or directory (check the path)\n"; code != exitError || stdout != "" || stderr != want {
		t.Errorf("list --associated missing: exit %d, stdout %q, stderr %q; want %d, %q", code, stdout, stderr, exitError, want)
	}
}
