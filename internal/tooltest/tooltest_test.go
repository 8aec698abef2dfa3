package tooltest

import (
	"runtime"
	"strings"
	"testing"
)

func TestMessage(t *testing.T) {
	for _, tc := range []struct {
		name, pkg, sbin string
		want            []string
	}{
		{name: "qemu-img", pkg: "qemu-utils", want: []string{"qemu-img not found in PATH", "install the Debian package qemu-utils", "scripts/install-deps.sh"}},
		{name: "frob", want: []string{"frob not found in PATH", "install it,", "scripts/install-deps.sh"}},
		{name: "sgdisk", pkg: "gdisk", sbin: "/usr/sbin", want: []string{"sgdisk is in /usr/sbin, which is not in PATH", "add /usr/sbin and /sbin to PATH"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := message(tc.name, tc.pkg, tc.sbin)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("message = %q, want it to contain %q", got, w)
				}
			}
		})
	}
}

func TestParseChecks(t *testing.T) {
	got := parseChecks(strings.NewReader("#!/bin/sh\ncheck() {\n\tcommand -v \"$1\"\n}\ncheck xz xz-utils\ncheck qemu-io qemu-utils\n\tcheck zstd zstd\nneed=\"\"\n"))
	want := map[string]string{"xz": "xz-utils", "qemu-io": "qemu-utils", "zstd": "zstd"}
	if len(got) != len(want) {
		t.Fatalf("parseChecks = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("parseChecks[%q] = %q, want %q", k, got[k], v)
		}
	}
}

// The repository's own script gives the packages of the tools the tests
// run.
func TestPackagesFromInstallDeps(t *testing.T) {
	pkgs := packages()
	for cmd, pkg := range map[string]string{"qemu-img": "qemu-utils", "xz": "xz-utils", "sgdisk": "gdisk", "chromium-headless-shell": "chromium-headless-shell"} {
		if pkgs[cmd] != pkg {
			t.Errorf("packages()[%q] = %q, want %q (from scripts/install-deps.sh)", cmd, pkgs[cmd], pkg)
		}
	}
}

// Require and RequireAny fail a test for a missing command and pass one
// that is there.
func TestRequire(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(tb testing.TB)
		fail string // "" when the call must pass
	}{
		{name: "present", run: func(tb testing.TB) { Require(tb, "sh") }},
		{name: "missing", run: func(tb testing.TB) { Require(tb, "sh", "nbdloop-no-such-tool") }, fail: "nbdloop-no-such-tool not found in PATH"},
		{name: "any, second present", run: func(tb testing.TB) { RequireAny(tb, "nbdloop-no-such-tool", "sh") }},
		{name: "any, none present", run: func(tb testing.TB) { RequireAny(tb, "nbdloop-no-such-tool", "nbdloop-nor-this") }, fail: "also looked for nbdloop-nor-this"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() { // Fatal ends the goroutine with runtime.Goexit
				defer close(done)
				tc.run(r)
			}()
			<-done
			switch {
			case tc.fail == "" && r.msg != "":
				t.Errorf("failed with %q, want a pass", r.msg)
			case tc.fail != "" && !strings.Contains(r.msg, tc.fail):
				t.Errorf("failure = %q, want it to contain %q", r.msg, tc.fail)
			}
		})
	}
}

// recorder is a testing.TB whose Fatal records the message and ends the
// calling goroutine, without failing the real test.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatal(args ...any) {
	for _, a := range args {
		r.msg += a.(string)
	}
	runtime.Goexit()
}
