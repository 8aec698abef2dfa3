package script

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// The example programs of scripts/examples, each serving a copy of the same
// file, keep the Source contract.
func TestConformance(t *testing.T) {
	const size = 4 << 20
	tests := []struct {
		name string
		path string // relative to this package, or "" for sh persistent
		spec string // options
		tool string // the interpreter the program needs beyond sh, if any
	}{
		{name: "ramdisk.sh", path: "../../scripts/examples/ramdisk.sh"},
		{name: "file-persistent.py", path: "../../scripts/examples/file-persistent.py", spec: "persistent", tool: "python3"},
		{name: "sh persistent", spec: "persistent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.tool != "" {
				tooltest.Require(t, tt.tool)
			}
			dir := t.TempDir()
			ref, data := disk(t, dir, size)
			path := tt.path
			if path == "" {
				path = writeScript(t, dir, "p.sh", persistentScript(ref, filepath.Join(dir, "pids"), "/dev/null", "", ""))
			}
			sourcetest.Run(t, func(t *testing.T) sources.Source {
				// A fresh copy for every sub-test: they write.
				img := filepath.Join(dir, "copy.img")
				if err := os.WriteFile(img, data, 0o644); err != nil {
					t.Fatal(err)
				}
				opts, err := ParseOptions(tt.spec)
				if err != nil {
					t.Fatal(err)
				}
				opts.Logf = t.Logf
				if tt.path != "" {
					opts.Params = append(opts.Params, Param{Key: "file", Value: img})
				} else {
					// The sh program serves ref itself: restore it.
					if err := os.WriteFile(ref, data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				s, err := Open(path, opts)
				if err != nil {
					t.Fatalf("Open(%s): %v", path, err)
				}
				if s.Caps().ReadOnly {
					t.Fatalf("Caps() = %v, want writable", s.Caps())
				}
				return s
			}, data)
		})
	}
}

// TestRAMDiskExample: with no options the example makes a new, empty
// 64 MiB disk in $tmpdir, removed at Close.
func TestRAMDiskExample(t *testing.T) {
	s := open(t, "../../scripts/examples/ramdisk.sh", Options{})
	if s.Size() != 64<<20 || !s.Caps().Parallel || s.Caps().ReadOnly {
		t.Errorf("Size() = %d, Caps() = %v; want 64 MiB, parallel, writable", s.Size(), s.Caps())
	}
	p := []byte("hello, block device written in shell")
	if _, err := s.WriteAt(p, 1<<20-3); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p)+6)
	if _, err := s.ReadAt(got, 1<<20-6); err != nil {
		t.Fatal(err)
	}
	if want := append([]byte{0, 0, 0}, append(bytes.Clone(p), 0, 0, 0)...); !bytes.Equal(got, want) {
		t.Errorf("ReadAt = %q, want %q", got, want)
	}
	s2 := open(t, "../../scripts/examples/ramdisk.sh", Options{Params: []Param{{"size", "1M"}}})
	if s2.Size() != 1<<20 {
		t.Errorf("size=1M: Size() = %d", s2.Size())
	}
	if _, err := Open("../../scripts/examples/ramdisk.sh", Options{Params: []Param{{"colour", "red"}}}); err == nil {
		t.Errorf("Open with colour=red = nil error, want the script's complaint")
	}
}
