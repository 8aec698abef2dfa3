package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// openPTY returns the terminal end of a new pseudo-terminal.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	return pts
}

// TestPackStdio runs `nbdloop pack` as a process with - for standard
// input (a pipe, copied to a temporary file first, or a regular file read
// in place; compressed or not) and standard output (refused when it is a
// terminal), and --quiet.
func TestPackStdio(t *testing.T) {
	tooltest.Require(t, "xz", "zstd")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := bytes.Repeat([]byte("nbdloop pack reads standard input. "), 60000)[:2<<20]
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	xzData, err := exec.Command("xz", "-c", "-0", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		stdin  func(t *testing.T) io.Reader // nil: none
		stdout func(t *testing.T) *os.File  // nil: a pipe, whose bytes are checked
		out    string                       // the output file ("": standard output)
		check  string                       // decompressor of the output
		code   int
		stderr string // in stderr ("": the summary line); with code != 0 the one line
	}{
		{name: "stdin pipe", args: []string{"pack", "-", "OUT"}, out: "a.xz", check: "xz",
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(data) }, stderr: "standard input -> "},
		{name: "stdin file, -o", args: []string{"pack", "-", "-o", "OUT"}, out: "b.zst", check: "zstd",
			stdin: func(t *testing.T) io.Reader { return openFile(t, img) }},
		{name: "stdin compressed", args: []string{"pack", "-", "OUT", "--level", "1"}, out: "c.zst", check: "zstd",
			stdin: func(t *testing.T) io.Reader { return bytes.NewReader(xzData) }},
		{name: "stdout", args: []string{"pack", "--format", "zstd", img, "-"}, check: "zstd", stderr: " -> standard output: "},
		{name: "stdout, quiet", args: []string{"pack", img, "-", "--format=xz", "-q"}, check: "xz", stderr: "-"},
		{name: "quiet", args: []string{"pack", "--quiet", img, "OUT"}, out: "d.xz", check: "xz", stderr: "-"},
		{name: "stdout without --format", args: []string{"pack", img, "-"}, code: exitUsage,
			stderr: "pack: standard output has no name to tell the format from: give --format xz or --format zstd"},
		{name: "stdout a terminal", args: []string{"pack", img, "-", "--format", "xz"}, code: exitUsage,
			stdout: openPTY, stderr: "pack: standard output is a terminal: refused"},
		{name: "OUT and -o", args: []string{"pack", img, "x.xz", "-o", "y.xz"}, code: exitUsage,
			stderr: "pack: one IMAGE expected, got " + img + " and x.xz (OUT is given with -o y.xz)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, tt.out)
			cmd := exec.Command(exe)
			for _, a := range tt.args {
				cmd.Args = append(cmd.Args, strings.ReplaceAll(a, "OUT", out))
			}
			cmd.Args[0] = "nbdloop"
			cmd.Env = append(os.Environ(), asMainEnv+"=1")
			if tt.stdin != nil {
				cmd.Stdin = tt.stdin(t)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if tt.stdout != nil {
				cmd.Stdout = tt.stdout(t)
			}
			cmd.Run()
			code := cmd.ProcessState.ExitCode()
			if code != tt.code {
				t.Fatalf("%v = %d, stderr %q; want %d", cmd.Args, code, stderr.String(), tt.code)
			}
			if code != 0 {
				if !strings.Contains(stderr.String(), tt.stderr) || strings.Count(stderr.String(), "\n") != 1 {
					t.Errorf("stderr %q; want one line with %q", stderr.String(), tt.stderr)
				}
				return
			}
			switch tt.stderr {
			case "-":
				if stderr.Len() != 0 {
					t.Errorf("--quiet: stderr %q, want nothing", stderr.String())
				}
			default:
				if !strings.Contains(stderr.String(), "pack: 100%") || !strings.Contains(stderr.String(), tt.stderr) {
					t.Errorf("stderr %q: want progress and a summary with %q", stderr.String(), tt.stderr)
				}
			}
			dc := exec.Command(tt.check, "-dc")
			if tt.out != "" {
				dc.Args = append(dc.Args, out)
				if stdout.Len() != 0 {
					t.Errorf("%d bytes on stdout, want none", stdout.Len())
				}
			} else {
				dc.Stdin = &stdout
			}
			if got, err := dc.Output(); err != nil || !bytes.Equal(got, data) {
				t.Errorf("%v: %v, or the output differs from the image", dc.Args, err)
			}
			if tmps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp")); len(tmps) > 0 {
				t.Errorf("temporary files left: %q", tmps)
			}
		})
	}
}

func openFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
