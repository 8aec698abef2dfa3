package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/attach"
)

// asMainEnv makes the test binary behave as nbdloop, for tests that need a
// real process (bash completion reads os.Args).
const asMainEnv = "NBDLOOP_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	switch {
	case len(os.Args) > 1 && (os.Args[1] == attach.ServeCommand || os.Args[1] == attach.SuperviseCommand ||
		os.Args[1] == attach.NetServeCommand || os.Args[1] == attach.NetSupervisorCommand):
		// attach.Attach re-executes its own binary as the server. Should a
		// test reach it, refuse here: running the tests again in the child
		// would re-execute again, without end.
		fmt.Fprintln(os.Stderr, "nbdloop test binary: refusing to run as the server process")
		os.Exit(1)
	case os.Getenv(asMainEnv) == "1":
		os.Exit(run(os.Args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// runArgs runs the command line (without "nbdloop") and returns the exit
// status and what went to stdout and stderr.
func runArgs(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"nbdloop"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestUsageErrors checks bad command lines. Every one is detected before the
// root check and before any device is touched, so these run as any user and
// without the nbd driver.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // substring of the one stderr line, after "nbdloop: "
	}{
		{name: "no SOURCE", args: []string{"attach"}, want: "attach: no SOURCE given"},
		{name: "two SOURCEs", args: []string{"attach", "a.img", "b.img"}, want: "attach: one SOURCE expected, got 2: a.img b.img"},
		{name: "unknown flag", args: []string{"attach", "--bogus", "disk.img"}, want: "attach: flag provided but not defined: -bogus (see nbdloop attach --help)"},
		{name: "flag without value", args: []string{"attach", "-b"}, want: "attach: flag needs an argument: -b"},
		{name: "block size 1000", args: []string{"attach", "-b", "1000", "disk.img"}, want: "attach: --block-size 1000: must be a power of two from 512 to 4096"},
		{name: "block size abc", args: []string{"attach", "-b", "abc", "disk.img"}, want: `attach: --block-size "abc": not a size`},
		{name: "block size 8E", args: []string{"attach", "--block-size", "8E", "disk.img"}, want: `attach: --block-size "8E": size is larger than the maximum`},
		{name: "connections 0", args: []string{"attach", "-c", "0", "disk.img"}, want: "attach: --connections 0: must be from 1 to 64"},
		{name: "connections abc", args: []string{"attach", "-c", "abc", "disk.img"}, want: `attach: invalid value "abc" for flag -c`},
		{name: "timeout soon", args: []string{"attach", "--timeout", "soon", "disk.img"}, want: `attach: --timeout "soon": not a number of seconds (e.g. 30 or 2m)`},
		{name: "timeout negative", args: []string{"attach", "--timeout", "-5", "disk.img"}, want: `attach: --timeout "-5": not a number of seconds`},
		{name: "timeout fraction", args: []string{"attach", "--timeout", "1.5s", "disk.img"}, want: `attach: --timeout "1.5s": not a number of seconds`},
		{name: "dead timeout negative", args: []string{"attach", "--dead-timeout", "-1", "disk.img"}, want: `attach: --dead-timeout "-1": not a number of seconds`},
		{name: "offset 12Q", args: []string{"attach", "--offset", "12Q", "disk.img"}, want: `attach: --offset "12Q": unknown suffix "Q"`},
		{name: "offset unaligned", args: []string{"attach", "-o", "100", "disk.img"}, want: "attach: --offset 100: must be a multiple of 512 bytes"},
		{name: "sizelimit negative", args: []string{"attach", "--sizelimit", "-1", "disk.img"}, want: `attach: --sizelimit "-1": not a size`},
		{name: "device sda", args: []string{"attach", "--device", "/dev/sda", "disk.img"}, want: "attach: --device /dev/sda: not an nbd device (use /dev/nbdN)"},
		{name: "ublk device nbd0", args: []string{"attach", "--driver", "ublk", "--device", "/dev/nbd0", "disk.img"}, want: "attach: --device /dev/nbd0: not a ublk device (use /dev/ublkbN)"},
		{name: "nbd device ublkb0", args: []string{"attach", "--device", "/dev/ublkb0", "disk.img"}, want: "attach: --device /dev/ublkb0: not an nbd device (use /dev/nbdN)"},
		{name: "resize ublk", args: []string{"resize", "/dev/ublkb0"}, want: "resize: /dev/ublkb0: nbdloop resizes nbd devices only"},
		{name: "find with device", args: []string{"attach", "--find", "--device", "/dev/nbd1", "disk.img"}, want: "attach: --find and --device exclude each other"},
		{name: "foreground with run", args: []string{"attach", "--foreground", "--run", "true", "disk.img"}, want: "attach: --foreground and --run exclude each other"},
		{name: "memory 0", args: []string{"attach", "memory:0"}, want: "attach: memory:0: size must be greater than 0"},
		{name: "memory 100", args: []string{"attach", "memory:100"}, want: "attach: memory:100: smaller than one 512-byte block (give a larger size, e.g. memory:1G)"},
		{name: "memory below -b", args: []string{"attach", "memory:1000", "-b", "4096"}, want: "attach: memory:1000: smaller than one 4096-byte block"},
		{name: "sizelimit 1000", args: []string{"attach", "--sizelimit", "1000", "disk.img"}, want: "attach: --sizelimit 1000: not a multiple of the 512-byte block size (use --sizelimit 512 or --sizelimit 1024)"},
		{name: "nbds URL with a pre-shared key", args: []string{"attach", "nbds://host/export?tls-psk-file=k", "-r"}, want: "attach: nbds://host/export?tls-psk-file=k: tls-psk-file: only X.509 certificates are supported for TLS (tls-certificates=DIR)"},
		{name: "nbd URL with a TLS parameter", args: []string{"attach", "nbd://host/export?tls-certificates=d"}, want: "attach: nbd://host/export?tls-certificates=d: tls-certificates= applies to TLS, which nbd:// does not use (nbds://...)"},
		{name: "nbd URL without host", args: []string{"attach", "nbd:///export"}, want: "attach: nbd:///export: no host given (nbd://HOST[:PORT]/EXPORT)"},
		{name: "nbd URL with offset", args: []string{"attach", "-o", "512", "nbd://host/export"}, want: "attach: nbd://host/export: --offset, --sizelimit and --direct-io apply to files only"},
		{name: "URL part", args: []string{"attach", "--concat", "a.img", "nbds://host/export?tls-verify-peer=perhaps"}, want: "attach: nbds://host/export?tls-verify-peer=perhaps: tls-verify-peer=perhaps: give true or false (1 or 0)"},
		{name: "ftp URL", args: []string{"attach", "ftp://example.com/disk.img"}, want: "attach: ftp://example.com/disk.img: ftp:// URLs are not supported (SOURCE is a PATH, file:PATH, memory:SIZE, exec:PATH, an http(s):// URL, s3://BUCKET/KEY, nbd[s]://HOST[:PORT]/EXPORT or nbd[s]+unix:///EXPORT?socket=PATH)"},
		{name: "URL with credentials", args: []string{"attach", "https://me:secret@example.com/disk.img"}, want: "attach: https://me:xxxxx@example.com/disk.img: credentials in the URL are refused: they would be kept in the device's state record and shown by nbdloop list (give a URL without user:password@)"},
		{name: "URL with offset", args: []string{"attach", "-o", "512", "https://example.com/disk.img"}, want: "attach: https://example.com/disk.img: --offset, --sizelimit and --direct-io apply to files only"},
		{name: "s3 URL without key", args: []string{"attach", "s3://bucket"}, want: "attach: s3://bucket: no object key in the URL (give s3://BUCKET/KEY)"},
		{name: "s3 URL with offset", args: []string{"attach", "-o", "512", "s3://bucket/disk.img"}, want: "attach: s3://bucket/disk.img: --offset, --sizelimit and --direct-io apply to files only"},
		{name: "s3 flags without s3", args: []string{"attach", "--s3-profile", "p", "disk.img"}, want: "attach: --s3-profile and --s3-endpoint apply to s3:// SOURCEs only (omit them)"},
		{name: "pack URL", args: []string{"pack", "ftp://example.com/disk.img", "-o", "x.xz"}, want: "pack: ftp://example.com/disk.img: ftp:// URLs are not supported"},
		{name: "run empty", args: []string{"attach", "--run", "", "disk.img"}, want: "attach: --run: no command given (e.g. --run 'mkfs.ext4 -q $DEVICE')"},
		{name: "run blank", args: []string{"attach", "disk.img", "--run=  "}, want: "attach: --run: no command given"},
		{name: "pack level 99", args: []string{"pack", "--level", "99", "disk.img", "-o", "x.xz"}, want: "pack: --level 99: xz levels are 0 to 9 (e.g. --level 6)"},
		{name: "memory 12Q", args: []string{"attach", "memory:12Q"}, want: `attach: memory:12Q: unknown suffix "Q"`},
		{name: "memory with offset", args: []string{"attach", "--offset", "512", "memory:1G"}, want: "attach: memory:1G: --offset, --sizelimit and --direct-io apply to files only"},
		{name: "file prefix without path", args: []string{"attach", "file:"}, want: "attach: file:: no path given"},
		{name: "detach without args", args: []string{"detach"}, want: "detach: no DEVICE given (e.g. nbdloop detach /dev/nbd0, or -a)"},
		{name: "detach all with device", args: []string{"detach", "-a", "/dev/nbd0"}, want: "detach: -a takes no DEVICE"},
		{name: "detach sda", args: []string{"detach", "/dev/sda"}, want: "detach: /dev/sda: not an nbd device (use /dev/nbdN)"},
		{name: "detach second device bad", args: []string{"detach", "nbd1", "nbd2x"}, want: "detach: nbd2x: not an nbd device"},
		{name: "detach unknown flag", args: []string{"detach", "--bogus"}, want: "detach: flag provided but not defined: -bogus (see nbdloop detach --help)"},
		{name: "list sda", args: []string{"list", "/dev/sda"}, want: "list: /dev/sda: not an nbd device (use /dev/nbdN)"},
		{name: "list unknown flag", args: []string{"list", "--bogus"}, want: "list: flag provided but not defined: -bogus (see nbdloop list --help)"},
		{name: "unknown command", args: []string{"frobnicate"}, want: "frobnicate: unknown command (use attach, detach, list or see nbdloop --help)"},
		{name: "help is not a command", args: []string{"help"}, want: "help: unknown command"},
		{name: "unknown global flag", args: []string{"--bogus"}, want: "flag provided but not defined: -bogus (see nbdloop --help)"},
		{name: "completion tcsh", args: []string{"completion", "tcsh"}, want: "completion: tcsh: unknown shell (use bash, zsh, fish)"},
		{name: "completion without shell", args: []string{"completion"}, want: "completion: one SHELL expected (bash, zsh, fish)"},
		{name: "completion two shells", args: []string{"completion", "bash", "zsh"}, want: "completion: one SHELL expected (bash, zsh, fish)"},
		{name: "completion unknown flag", args: []string{"completion", "--bogus"}, want: "completion: flag provided but not defined: -bogus (see nbdloop completion --help)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runArgs(t, tt.args...)
			if code != exitUsage {
				t.Errorf("run(%q) = %d, want %d", tt.args, code, exitUsage)
			}
			if stdout != "" {
				t.Errorf("run(%q) stdout = %q, want nothing", tt.args, stdout)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasSuffix(stderr, "\n") {
				t.Fatalf("run(%q) stderr = %q, want exactly one line", tt.args, stderr)
			}
			msg, ok := strings.CutPrefix(lines[0], "nbdloop: ")
			if !ok {
				t.Fatalf("run(%q) stderr = %q, want it to start with %q", tt.args, stderr, "nbdloop: ")
			}
			if strings.HasPrefix(msg, "nbdloop") {
				t.Errorf("run(%q) stderr = %q, want the program name once", tt.args, stderr)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, stderr, tt.want)
			}
		})
	}
}

// TestVersion: -V and --version print the version, as losetup's do; -v is
// not the version (it is attach's --verbose).
func TestVersion(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = "1.2.3-test"
	tests := []struct {
		args       []string
		code       int
		stdout     string
		stderrLine string
	}{
		{args: []string{"--version"}, stdout: "nbdloop version 1.2.3-test\n"},
		{args: []string{"-V"}, stdout: "nbdloop version 1.2.3-test\n"},
		{args: []string{"-V", "attach", "disk.img"}, stdout: "nbdloop version 1.2.3-test\n"},
		{args: []string{"-v"}, code: exitUsage, stderrLine: "nbdloop: flag provided but not defined: -v (see nbdloop --help)\n"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runArgs(t, tt.args...)
		if code != tt.code || stdout != tt.stdout || stderr != tt.stderrLine {
			t.Errorf("run(%q) = %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, stdout, stderr, tt.code, tt.stdout, tt.stderrLine)
		}
	}
}

// TestNoArguments: nbdloop alone lists the devices, as losetup does.
func TestNoArguments(t *testing.T) {
	code, stdout, stderr := runArgs(t)
	lcode, lstdout, lstderr := runArgs(t, "list")
	if code != lcode || stdout != lstdout || stderr != lstderr {
		t.Errorf("nbdloop = %d, %q, %q; want what nbdloop list gives: %d, %q, %q", code, stdout, stderr, lcode, lstdout, lstderr)
	}
	if strings.Contains(stdout, "USAGE") {
		t.Errorf("nbdloop printed the help:\n%s", stdout)
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    []string // substrings of stdout
		notWant []string
	}{
		{name: "help flag", args: []string{"--help"}, want: []string{"attach", "detach", "list", "SOURCE is one of", "memory:SIZE", "EXIT STATUS"}, notWant: []string{"   man "}},
		{name: "short help flag", args: []string{"-h"}, want: []string{"attach", "detach", "list"}},
		{name: "attach help", args: []string{"attach", "--help"}, want: []string{"--block-size", "--read-only", "--partscan", "--dead-timeout", "memory:SIZE", "--direct-io[=on|off]", "--show"}},
		{name: "help after SOURCE", args: []string{"attach", "disk.img", "--help"}, want: []string{"--block-size"}},
		{name: "version in help", args: []string{"--help"}, want: []string{"--version, -V"}},
		{name: "detach help", args: []string{"detach", "-h"}, want: []string{"--all", "--force"}},
		{name: "list help", args: []string{"list", "--help"}, want: []string{"--json", "STATE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runArgs(t, tt.args...)
			if code != exitOK || stderr != "" {
				t.Errorf("run(%q) = %d, stderr %q, want %d, nothing", tt.args, code, stderr, exitOK)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("run(%q) stdout does not mention %q:\n%s", tt.args, w, stdout)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stdout, w) {
					t.Errorf("run(%q) stdout mentions %q:\n%s", tt.args, w, stdout)
				}
			}
		})
	}
}
