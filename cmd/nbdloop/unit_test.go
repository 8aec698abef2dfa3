package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// TestSystemdUnit checks dist/nbdloop.service as make install fills it in:
// systemd-analyze verify accepts it, its ExecStart and ExecStop are this
// binary's nbdtab attach and detach of the example table's path, and the
// ordering that lets fstab mount its devices and unmount them first is
// there. The example table dist/nbdtab parses, to no lines.
func TestSystemdUnit(t *testing.T) {
	tooltest.Require(t, "systemd-analyze")
	b, err := os.ReadFile("../../dist/nbdloop.service")
	if err != nil {
		t.Fatal(err)
	}
	bindir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(exe, filepath.Join(bindir, "nbdloop")); err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(b), "@BINDIR@", bindir)
	if bad := verifyUnit(t, strings.ReplaceAll(unit, "Type=oneshot", "Type=oneshoot")); len(bad) == 0 {
		t.Error("systemd-analyze verify accepts Type=oneshoot: the check proves nothing")
	}
	for _, l := range verifyUnit(t, unit) {
		t.Errorf("systemd-analyze verify: %s", l)
	}
	for _, want := range []string{
		"ExecStart=" + bindir + "/nbdloop nbdtab attach " + DefaultNbdTab,
		"ExecStop=" + bindir + "/nbdloop nbdtab detach " + DefaultNbdTab,
		"Type=oneshot", "RemainAfterExit=yes", "DefaultDependencies=no",
		"Before=local-fs-pre.target", "Conflicts=umount.target", "Before=umount.target",
		"After=modprobe@nbd.service",
	} {
		if !strings.Contains(unit, "\n"+want) {
			t.Errorf("unit has no line %q", want)
		}
	}
	if lines, err := readNbdTab("../../dist/nbdtab"); err != nil || len(lines) != 0 {
		t.Errorf("dist/nbdtab: %d lines, %v; want only comments", len(lines), err)
	}
}

// verifyUnit runs systemd-analyze verify on unit (the man page it names is
// not installed yet) and returns the lines it prints about it: verify also
// reports problems of the host's own units.
func verifyUnit(t *testing.T, unit string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nbdloop.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("systemd-analyze", "verify", "--man=no", path).CombinedOutput()
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "nbdloop") {
			lines = append(lines, l)
		}
	}
	return lines
}
