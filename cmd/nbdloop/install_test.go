package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall runs make install-files (install without the build) and
// make uninstall into a DESTDIR: the binary, the man page, the mount
// helper linked to the installed binary, the unit naming it, the example
// nbdtab (an edited one is neither replaced nor removed); uninstall leaves
// only the edited nbdtab.
func TestMakeInstall(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, edited := range []bool{false, true} {
		dest := t.TempDir()
		if edited {
			os.MkdirAll(filepath.Join(dest, "etc/nbdloop"), 0o755)
			os.WriteFile(filepath.Join(dest, "etc/nbdloop/nbdtab"), []byte("/srv/mine.img\n"), 0o644)
		}
		make := func(target string) {
			cmd := exec.Command("make", "-s", "-C", "../..", target, "DESTDIR="+dest, "PREFIX=/usr", "BIN="+exe)
			cmd.Env = append(os.Environ(), asMainEnv+"=1") // the test binary is nbdloop
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("make %s: %v\n%s", target, err, out)
			}
		}
		make("install-files")
		for _, f := range []string{"usr/bin/nbdloop", "usr/share/man/man8/nbdloop.8", "usr/lib/systemd/system/nbdloop.service", "etc/nbdloop/nbdtab",
			"usr/share/bash-completion/completions/nbdloop", "usr/share/zsh/vendor-completions/_nbdloop", "usr/share/fish/vendor_completions.d/nbdloop.fish"} {
			if fi, err := os.Stat(filepath.Join(dest, f)); err != nil || fi.Size() == 0 {
				t.Errorf("install: %s: %v (or empty)", f, err)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(dest, "usr/share/fish/vendor_completions.d/nbdloop.fish")); !strings.Contains(string(b), "complete -c nbdloop") {
			t.Errorf("the installed fish completion is not one:\n%.300s", b)
		}
		if target, err := os.Readlink(filepath.Join(dest, "sbin/mount.nbdloop")); err != nil || target != "/usr/bin/nbdloop" {
			t.Errorf("mount helper: %q, %v; want a link to /usr/bin/nbdloop", target, err)
		}
		unit, _ := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/nbdloop.service"))
		if !strings.Contains(string(unit), "\nExecStart=/usr/bin/nbdloop nbdtab attach ") || strings.Contains(string(unit), "@BINDIR@") {
			t.Errorf("installed unit does not name /usr/bin/nbdloop:\n%s", unit)
		}
		tab, _ := os.ReadFile(filepath.Join(dest, "etc/nbdloop/nbdtab"))
		if edited != (string(tab) == "/srv/mine.img\n") {
			t.Errorf("edited %v: nbdtab is now %q", edited, tab)
		}
		make("uninstall")
		var left []string
		filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(dest, p)
				left = append(left, rel)
			}
			return nil
		})
		want := ""
		if edited {
			want = "etc/nbdloop/nbdtab"
		}
		if strings.Join(left, " ") != want {
			t.Errorf("edited %v: uninstall left %q, want %q", edited, left, want)
		}
	}
}
