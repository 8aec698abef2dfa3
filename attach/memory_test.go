package attach

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenSourceMemorySeals checks that a memory: device's memfd is sealed
// at its size once opened, and that a memfd that refuses seals (made by an
// older supervisor, without MFD_ALLOW_SEALING) still serves reads and
// writes.
func TestOpenSourceMemorySeals(t *testing.T) {
	spec := Spec{Kind: "memory", Size: 1 << 20}
	tests := []struct {
		name      string
		memfd     func(t *testing.T) *os.File
		wantSeals int
	}{
		{"new", func(t *testing.T) *os.File {
			mf, err := newMemfd(spec)
			if err != nil {
				t.Fatal(err)
			}
			return mf
		}, unix.F_SEAL_SHRINK | unix.F_SEAL_GROW},
		{"without sealing", func(t *testing.T) *os.File {
			fd, err := unix.MemfdCreate("old", unix.MFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			return os.NewFile(uintptr(fd), "old")
		}, unix.F_SEAL_SEAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mf := tt.memfd(t)
			// The Source owns mf; a duplicate outlives it for the checks.
			dup, err := unix.Dup(int(mf.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(dup)
			o := openSource(t, spec, OpenOptions{BlockSize: 512, MemFile: mf})
			seals, err := unix.FcntlInt(uintptr(dup), unix.F_GET_SEALS, 0)
			if err != nil {
				t.Fatal(err)
			}
			if seals != tt.wantSeals {
				t.Errorf("seals = %#x, want %#x", seals, tt.wantSeals)
			}
			if tt.wantSeals&unix.F_SEAL_SHRINK != 0 && unix.Ftruncate(dup, 4096) == nil {
				t.Errorf("ftruncate of the sealed memfd to 4096 bytes succeeded")
			}
			want := bytes.Repeat([]byte("ram disk"), 512)
			if _, err := o.Source.WriteAt(want, 8192+3); err != nil {
				t.Fatalf("WriteAt: %v", err)
			}
			got := make([]byte, len(want))
			if _, err := unix.Pread(dup, got, 8192+3); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("the memfd does not hold what WriteAt wrote")
			}
		})
	}
}
