package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestSplitWords: nbdtab lines split as sh splits words, without
// expansions.
func TestSplitWords(t *testing.T) {
	tests := []struct {
		line  string
		words []string
		err   string
	}{
		{"/dev/nbd3 --partscan /srv/disk.img", []string{"/dev/nbd3", "--partscan", "/srv/disk.img"}, ""},
		{"  \t ", nil, ""},
		{"# a comment", nil, ""},
		{"-r /srv/a.img # trailing comment", []string{"-r", "/srv/a.img"}, ""},
		{"/srv/a#b.img", []string{"/srv/a#b.img"}, ""},
		{`'/srv/my disk.img' "x\"y" a\ b ''`, []string{"/srv/my disk.img", `x"y`, "a b", ""}, ""},
		{`--filter 'delay:read=100,write=100' x`, []string{"--filter", "delay:read=100,write=100", "x"}, ""},
		{`'open`, nil, "unterminated ' quote"},
		{`"open`, nil, `unterminated " quote`},
	}
	for _, tt := range tests {
		words, err := splitWords(tt.line)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%q: err %v, want %q", tt.line, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(words, tt.words) {
			t.Errorf("%q: %q, %v; want %q", tt.line, words, err, tt.words)
		}
	}
}

// TestNbdTabLines: a table's lines become the Configs attach would make of
// the same command line, and each line's key is stable under reformatting.
func TestNbdTabLines(t *testing.T) {
	dir := t.TempDir()
	tab := filepath.Join(dir, "nbdtab")
	os.WriteFile(tab, []byte(`# nbdloop devices
/dev/nbd3 --partscan /srv/disk.img

--read-only   --autoclear  '/srv/my image.img'   # comment
--dead-timeout 60 memory:1G
`), 0o644)
	lines, err := readNbdTab(tab)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		num   int
		key   string
		check func(t *testing.T, words []string)
	}{
		{2, "/dev/nbd3 --partscan /srv/disk.img", func(t *testing.T, w []string) {
			cfg, err := attachConfig(tableArgs(w))
			if err != nil || cfg.Index != 3 || !cfg.PartScan || cfg.Source != "/srv/disk.img" {
				t.Errorf("config %+v, %v", cfg, err)
			}
		}},
		{4, `--read-only --autoclear "/srv/my image.img"`, func(t *testing.T, w []string) {
			cfg, err := attachConfig(tableArgs(w))
			if err != nil || cfg.Index != -1 || !cfg.ReadOnly || !cfg.Autoclear || cfg.Source != "/srv/my image.img" {
				t.Errorf("config %+v, %v", cfg, err)
			}
		}},
		{5, "--dead-timeout 60 memory:1G", func(t *testing.T, w []string) {
			cfg, err := attachConfig(tableArgs(w))
			if err != nil || cfg.DeadTimeout != time.Minute || cfg.Source != "memory:1G" {
				t.Errorf("config %+v, %v", cfg, err)
			}
		}},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d: %+v", len(lines), len(want), lines)
	}
	for i, w := range want {
		if lines[i].num != w.num || lines[i].key != w.key {
			t.Errorf("line %d: number %d key %q, want %d %q", i, lines[i].num, lines[i].key, w.num, w.key)
		}
		w.check(t, lines[i].words)
	}
}

// TestNbdTabRefused: lines attach would refuse, or that only make sense
// on a command line, fail with one line naming the problem.
func TestNbdTabRefused(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--run", "true", "/srv/a.img"}, "--run is for the command line only"},
		{[]string{"--foreground", "/srv/a.img"}, "--foreground is for the command line only"},
		{[]string{"/dev/nbd1"}, "no SOURCE"},
		{[]string{"-b", "1000", "/srv/a.img"}, "--block-size 1000"},
		{[]string{"--bogus", "/srv/a.img"}, "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		_, err := attachConfig(tableArgs(tt.args))
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestResizeNbdTabUsage: bad command lines of resize and nbdtab exit with
// 2 and one line; a table that cannot be read with 1.
func TestResizeNbdTabUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"resize"}, 2, "nbdloop: resize: one DEVICE expected"},
		{[]string{"resize", "/dev/sda"}, 2, "nbdloop: resize: /dev/sda: not an nbd device"},
		{[]string{"resize", "--bogus", "/dev/nbd0"}, 2, "nbdloop: resize: flag provided but not defined: -bogus"},
		{[]string{"nbdtab"}, 2, "nbdloop: nbdtab: attach or detach expected"},
		{[]string{"nbdtab", "up"}, 2, "nbdloop: nbdtab: attach or detach expected"},
		{[]string{"nbdtab", "attach", "a", "b"}, 2, "nbdloop: nbdtab: attach or detach expected"},
		{[]string{"nbdtab", "attach", "/nonexistent/nbdtab"}, 1, "nbdloop: nbdtab: open /nonexistent/nbdtab: no such file or directory"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runArgs(t, tt.args...)
		if code != tt.code || !strings.HasPrefix(stderr, tt.want) || strings.Count(stderr, "\n") != 1 || stdout != "" {
			t.Errorf("%q: exit %d, stderr %q; want %d, %q", tt.args, code, stderr, tt.code, tt.want)
		}
	}
}
