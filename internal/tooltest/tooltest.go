package tooltest

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Require fails the test, naming what to install, unless every command in
// names is found in PATH.
func Require(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatal(Message(name))
		}
	}
}

// RequireAny returns the path of the first command of names found in PATH
// (alternatives, best first, such as the names of a headless Chromium), or
// fails the test naming the first one and what to install.
func RequireAny(t testing.TB, names ...string) string {
	t.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := Message(names[0])
	if len(names) > 1 {
		msg += " (also looked for " + strings.Join(names[1:], ", ") + ")"
	}
	t.Fatal(msg)
	return ""
}

// Message is the failure message for a missing command name: the package
// that provides it when scripts/install-deps.sh names one, and the script.
func Message(name string) string {
	return message(name, packages()[name], sbinDir(name))
}

// message words the failure for name, provided by the Debian package pkg
// ("" when unknown) and present in sbin ("" when not) but not in PATH.
func message(name, pkg, sbin string) string {
	if sbin != "" {
		return name + " is in " + sbin + ", which is not in PATH: add /usr/sbin and /sbin to PATH"
	}
	what := "install it"
	if pkg != "" {
		what = "install the Debian package " + pkg
	}
	return name + " not found in PATH: the test runs it; " + what + ", or run scripts/install-deps.sh (as root), which installs every tool the tests need"
}

// sbinDir returns /usr/sbin or /sbin if name is there, else "": PATH
// lacks them for users other than root on some systems.
func sbinDir(name string) string {
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && fi.Mode().IsRegular() {
			return dir
		}
	}
	return ""
}

// packages reads the `check COMMAND PACKAGE` lines of
// scripts/install-deps.sh, found above the working directory (a test runs
// in its package's directory): command -> package. It returns an empty map
// if there is no such file.
func packages() map[string]string {
	pkgs := map[string]string{}
	dir, err := os.Getwd()
	if err != nil {
		return pkgs
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return pkgs
		}
		dir = parent
	}
	f, err := os.Open(filepath.Join(dir, "scripts", "install-deps.sh"))
	if err != nil {
		return pkgs
	}
	defer f.Close()
	return parseChecks(f)
}

// parseChecks returns command -> package from the `check COMMAND PACKAGE`
// lines of a script.
func parseChecks(r io.Reader) map[string]string {
	pkgs := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) == 3 && fs[0] == "check" {
			pkgs[fs[1]] = fs[2]
		}
	}
	return pkgs
}
