package imagetest

import (
	"os"
	"path/filepath"
	"testing"
)

// The watch must see an open, a read and a write of the canary, or the
// hostile-image tests that rely on it prove nothing.
func TestOutsideSeesOpens(t *testing.T) {
	o := NewOutside(t)
	if got := o.Opened(); len(got) != 0 {
		t.Fatalf("fresh watch reports %q", got)
	}
	f, err := os.OpenFile(o.Canary, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := o.Opened(); len(got) == 0 || got[0] != "canary" {
		t.Fatalf("open of the canary: Opened() = %q", got)
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := o.Opened(); len(got) != 0 {
		t.Fatalf("a file in Dir was reported: %q", got)
	}
	if n := Allocated(func() { _ = make([]byte, 8<<20) }); n < 8<<20 {
		t.Fatalf("Allocated missed an 8 MiB allocation: %d", n)
	}
}
