package sources

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestNamedFilesOpen(t *testing.T) {
	top := t.TempDir()
	img := filepath.Join(top, "images")
	other := filepath.Join(top, "other")
	for _, d := range []string{img, filepath.Join(img, "sub"), other} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string) {
		if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(img, "base.raw"))
	write(filepath.Join(img, "sub", "part.raw"))
	write(filepath.Join(other, "secret"))
	if err := syscall.Mkfifo(filepath.Join(img, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(other, "secret"), filepath.Join(img, "link-out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/part.raw", filepath.Join(img, "link-in")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/proc/self/root"+other+"/secret", filepath.Join(img, "magic")); err != nil {
		t.Fatal(err)
	}
	confined := Confine(filepath.Join(img, "disk.qcow2"))
	allowed := confined
	allowed.Allow = []string{other}
	ro := confined
	ro.ReadOnly = true
	tests := []struct {
		name  string
		n     NamedFiles
		file  string
		write bool
		ok    bool
	}{
		{"relative", confined, "base.raw", true, true},
		{"subdirectory", confined, "sub/part.raw", false, true},
		{"absolute inside", confined, filepath.Join(img, "base.raw"), false, true},
		{"symlink inside", confined, "link-in", false, true},
		{"dot-dot out", confined, "../other/secret", false, false},
		{"dot-dot out and back", confined, "../images/base.raw", false, true},
		{"absolute outside", confined, "/etc/passwd", false, false},
		{"symlink out", confined, "link-out", false, false},
		{"symlink through /proc", confined, "magic", false, false},
		{"allowed directory", allowed, filepath.Join(other, "secret"), true, true},
		{"symlink into an allowed directory", allowed, "link-out", false, false},
		{"fifo", confined, "fifo", false, false},
		{"character device", NamedFiles{Dir: "/dev"}, "/dev/null", false, false},
		{"the directory itself", confined, ".", false, false},
		{"empty name", confined, "", false, false},
		{"read-only refuses writing", ro, "base.raw", true, false},
		{"read-only reads", ro, "base.raw", false, true},
		{"zero value", NamedFiles{}, filepath.Join(img, "base.raw"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _, err := tt.n.Open(img, tt.file, tt.write)
			if tt.ok {
				if err != nil {
					t.Fatalf("Open(%q) = %v, want it opened", tt.file, err)
				}
				f.Close()
				return
			}
			if err == nil {
				f.Close()
				t.Fatalf("Open(%q) succeeded, want a refusal", tt.file)
			}
			var ce *ConfinedError
			if !errors.As(err, &ce) && tt.file != "." {
				t.Fatalf("Open(%q) = %v, want a *ConfinedError", tt.file, err)
			}
		})
	}
}
