package main

import (
	"context"
	"strings"
	"testing"
)

// TestVerbose: -v/--verbose, anywhere on the line, makes attach say its
// parsing step (the request as understood, defaults included), and the
// trace goes to stderr with the program's prefix; without it nothing is
// said.
func TestVerbose(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"attach", "-v", "disk.img"}, "SOURCE disk.img, the first free device, read-write unless the source is read-only, 512-byte blocks, 4 connections, timeout 0s, dead timeout 30s"},
		{[]string{"attach", "disk.img", "--verbose", "-r", "-c", "2", "--device", "/dev/nbd3", "-o", "1M", "--sizelimit", "4M", "--direct-io", "--no-restart"},
			"SOURCE disk.img, device /dev/nbd3, read-only, 512-byte blocks, 2 connections, timeout 0s, dead timeout 30s, offset 1048576, sizelimit 4194304, direct I/O, no restarts"},
		{[]string{"attach", "--concat", "a.img", "b.img", "-v", "-b", "4096", "--filter", "stats", "-P", "--timeout", "30"},
			"--concat of a.img b.img, the first free device, read-write unless the source is read-only, 4096-byte blocks, 4 connections, timeout 30s, dead timeout 30s, filter stats, partition scan"},
		{[]string{"attach", "--driver", "ublk", "--device", "/dev/ublkb2", "disk.img", "-v"},
			"SOURCE disk.img, device /dev/ublkb2, read-write unless the source is read-only, 512-byte blocks, 4 connections, timeout 0s, dead timeout 30s"},
		{[]string{"attach", "--partition", "2", "--format", "qcow2", "disk.qcow2", "-v", "--no-lock"},
			"SOURCE disk.qcow2, partition 2, the first free device, read-write unless the source is read-only, 512-byte blocks, 4 connections, timeout 0s, dead timeout 30s, format qcow2, no locks"},
	}
	for _, tt := range tests {
		args := append([]string(nil), tt.args...)
		if !strings.Contains(strings.Join(args, " "), " -c ") {
			args = append(args, "-c", "4") // the default depends on the CPUs
		}
		cfg, _, code, stderr := parsedAttach(t, args...)
		if code != exitOK {
			t.Fatalf("nbdloop %q: exit %d, %s", args, code, stderr)
		}
		if got := describeConfig(cfg); got != tt.want {
			t.Errorf("nbdloop %q: parsing step\n%s\nwant\n%s", args, got, tt.want)
		}
	}
	var b strings.Builder
	_, trace := verboseContext(context.Background(), &b, true)
	trace("parsing: %s", "x")
	if want := "nbdloop: parsing: x\n"; b.String() != want {
		t.Errorf("verbose trace wrote %q, want %q", b.String(), want)
	}
	b.Reset()
	_, trace = verboseContext(context.Background(), &b, false)
	trace("parsing: %s", "x")
	if b.Len() != 0 {
		t.Errorf("trace without --verbose wrote %q", b.String())
	}
}
