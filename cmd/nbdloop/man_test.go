package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const manPath = "../../man/nbdloop.8"

// renderMan runs `nbdloop man`, the command `make man` runs.
func renderMan(t *testing.T) string {
	t.Helper()
	code, stdout, stderr := runArgs(t, "man")
	if code != exitOK || stderr != "" {
		t.Fatalf("run(man) = %d, stderr %q, want %d, nothing", code, stderr, exitOK)
	}
	return stdout
}

func TestManPageCurrent(t *testing.T) {
	want, err := os.ReadFile(manPath)
	if err != nil {
		t.Fatalf("man/nbdloop.8 is missing (%v): run make man", err)
	}
	// The page is rendered with the date and version it was stamped with.
	th := thLine.FindStringSubmatch(string(want))
	if th == nil {
		t.Fatalf("man/nbdloop.8 has no .TH line with a date and version: run make man")
	}
	epoch := ""
	if th[1] != "" {
		d, err := time.Parse(time.DateOnly, th[1])
		if err != nil {
			t.Fatalf("man/nbdloop.8: .TH date %q: %v", th[1], err)
		}
		epoch = strconv.FormatInt(d.Unix(), 10)
	}
	t.Setenv("SOURCE_DATE_EPOCH", epoch)
	defer func(v string) { version = v }(version)
	version = strings.ReplaceAll(th[2], `\-`, "-")
	got := renderMan(t)
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("man/nbdloop.8 is stale: run make man\nfirst difference, line %d:\ngenerated: %q\ncommitted: %q", i+1, g, w)
			}
		}
	}
}

// TestManPageNoVersion checks that the page does not depend on the binary
// that renders it: `make man` uses a build with a version, the test does not.
var thLine = regexp.MustCompile(`(?m)^\.TH NBDLOOP 8 "([0-9-]*)" "nbdloop ([^"]*)" "System Administration"$`)

// TestManPageStamp: the .TH line carries the version and the date, from
// SOURCE_DATE_EPOCH when set (else the build's commit, which test binaries
// do not record), so that the page is reproducible.
func TestManPageStamp(t *testing.T) {
	defer func(v string) { version = v }(version)
	tests := []struct {
		version, epoch string
		want           string
	}{
		{"dev", "", `.TH NBDLOOP 8 "" "nbdloop dev" "System Administration"`},
		{"v1.2.0", "1700000000", `.TH NBDLOOP 8 "2023-11-14" "nbdloop v1.2.0" "System Administration"`},
		{"049d196-dirty", "0", `.TH NBDLOOP 8 "1970-01-01" "nbdloop 049d196\-dirty" "System Administration"`},
		{"dev", "yesterday", `.TH NBDLOOP 8 "" "nbdloop dev" "System Administration"`},
	}
	for _, tt := range tests {
		version = tt.version
		t.Setenv("SOURCE_DATE_EPOCH", tt.epoch)
		page := renderMan(t)
		if th := strings.Split(page, "\n")[1]; th != tt.want {
			t.Errorf("version %q, SOURCE_DATE_EPOCH %q: %s, want %s", tt.version, tt.epoch, th, tt.want)
		}
	}
	if got := manDate("", time.Date(2026, 12, 7, 23, 30, 0, 0, time.FixedZone("x", -3600))); got != "2026-12-08" {
		t.Errorf("manDate of a build time: %q, want the UTC date 2026-12-08", got)
	}
}

func TestManPageContents(t *testing.T) {
	page := renderMan(t)
	// Sections, in this order.
	sections := []string{".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH COMMANDS", ".SH OPTIONS", ".SH FILTERS", `.SH "EXIT STATUS"`, ".SH ENVIRONMENT", ".SH FILES", ".SH EXAMPLES", `.SH "SEE ALSO"`}
	at := 0
	for _, s := range sections {
		i := strings.Index(page[at:], "\n"+s+"\n")
		if i < 0 {
			t.Errorf("man page has no %q after byte %d", s, at)
			continue
		}
		at += i + 1
	}
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	for _, c := range app.Commands {
		sub := ".SS " + c.Name + "\n"
		if c.Hidden {
			if strings.Contains(page, sub) {
				t.Errorf("man page documents the hidden command %q", c.Name)
			}
			continue
		}
		if !strings.Contains(page, sub) {
			t.Errorf("man page has no %q", sub)
		}
		for _, f := range c.Flags {
			for _, n := range f.Names() {
				esc := `\fB\-\-` + strings.ReplaceAll(n, "-", `\-`) + `\fR`
				if len(n) == 1 {
					esc = `\fB\-` + n + `\fR`
				}
				if !strings.Contains(page, esc) {
					t.Errorf("man page does not document %s's flag %q (as %q)", c.Name, n, esc)
				}
			}
		}
	}
	for _, want := range []string{
		"nbdloop \\- attach files",  // NAME, for whatis/apropos
		`\fBmemory:SIZE\fR`,         // the SOURCE table is a list
		"# nbdloop attach disk.img", // examples kept verbatim
		`\fBlosetup\fR(8)`,
		`\fBnbdkit\fR(1)`,
		`\fBqemu\-nbd\fR(8)`,
		`\fBnbd\-client\fR(8)`,
		".SS cow\n",                                  // a filter, in FILTERS
		"Filters (\\-\\-filter): see FILTERS below.", // in attach
		`\fBNBDLOOP_STATE_DIR\fR`, `\fBNBDLOOP_DEBUG\fR`, `\fBXDG_CACHE_HOME\fR`, `\fBTMPDIR\fR`,
		`\fB/run/nbdloop/nbdN.json\fR`, `\fB\(ti/.cache/nbdloop/gzip\-index/\fR`, `\fB/etc/nbdloop/nbdtab\fR`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("man page does not contain %q", want)
		}
	}
	for _, l := range strings.Split(page, "\n") {
		if strings.HasPrefix(l, "'") {
			t.Errorf("man page line %q starts with a quote, which roff reads as a request", l)
		}
	}
}

// TestManPageRoff checks the page with groff's warnings enabled, where groff
// is installed.
func TestManPageRoff(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff not installed")
	}
	cmd := exec.Command(groff, "-man", "-ww", "-z")
	cmd.Stdin = strings.NewReader(renderMan(t))
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, out)
	}
}

func TestRoffText(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "plain", in: "attach a file", want: "attach a file"},
		{name: "dashes", in: "--read-only -r", want: `\-\-read\-only \-r`},
		{name: "backslash", in: `a\b`, want: `a\eb`},
		{name: "leading dot", in: ".hidden file", want: `\&.hidden file`},
		{name: "leading quote", in: "'mkfs'", want: `\(aqmkfs\(aq`},
		{name: "backquote caret tilde", in: "`x` 2^63 ~", want: `\(gax\(ga 2\(ha63 \(ti`},
		{name: "ellipsis at the end", in: "KiB, MiB, ...)", want: `KiB, MiB, ...)\&`},
		{name: "sentence end", in: "the end.", want: "the end."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := roffText(tt.in); got != tt.want {
				t.Errorf("roffText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestHeading(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantName string
		wantRest string
		wantOK   bool
	}{
		{name: "heading", in: "EXAMPLES:\n  # nbdloop list", wantName: "EXAMPLES", wantRest: "  # nbdloop list", wantOK: true},
		{name: "two words", in: "EXIT STATUS:\n  0 success", wantName: "EXIT STATUS", wantRest: "  0 success", wantOK: true},
		{name: "heading alone", in: "FILES:", wantName: "FILES", wantRest: "", wantOK: true},
		{name: "text", in: "SOURCE is one of:\n  PATH  a file", wantRest: "SOURCE is one of:\n  PATH  a file"},
		{name: "no colon", in: "EXAMPLES\n  x", wantRest: "EXAMPLES\n  x"},
		{name: "indented", in: "  NAME:", wantRest: "  NAME:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, rest, ok := heading(tt.in)
			if name != tt.wantName || rest != tt.wantRest || ok != tt.wantOK {
				t.Errorf("heading(%q) = %q, %q, %v, want %q, %q, %v", tt.in, name, rest, ok, tt.wantName, tt.wantRest, tt.wantOK)
			}
		})
	}
}
