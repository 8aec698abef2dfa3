package sources_test

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// TestFileMappedRange: a sealed memfd's File lends ranges of data from its
// mapping, with the bytes of the file; it refuses ranges with a hole, and
// asking does not fill the hole; it refuses ranges outside the window, a
// range Trim has just emptied, and any range of a File without a mapping.
func TestFileMappedRange(t *testing.T) {
	const size = 1 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	// A hole from 256 KiB to 512 KiB.
	sealed := func(t *testing.T) *os.File {
		mf := sealedMemfd(t, data)
		if err := unix.Fallocate(int(mf.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 256<<10, 256<<10); err != nil {
			t.Fatal(err)
		}
		return mf
	}
	unsealed := func(t *testing.T) *os.File {
		fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		mf := os.NewFile(uintptr(fd), "memfd")
		if _, err := mf.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		return mf
	}
	tests := []struct {
		name   string
		file   func(t *testing.T) *os.File
		opts   sources.FileOptions
		off, n int64
		trim   bool // Trim the range first
		want   bool
	}{
		{name: "data", file: sealed, off: 4096, n: 128 << 10, want: true},
		{name: "data after the hole", file: sealed, off: 512 << 10, n: 512 << 10, want: true},
		{name: "unaligned", file: sealed, off: 1000, n: 77777, want: true},
		{name: "window", file: sealed, opts: sources.FileOptions{Offset: 600 << 10, SizeLimit: 300 << 10}, off: 1000, n: 200 << 10, want: true},
		{name: "window over the hole", file: sealed, opts: sources.FileOptions{Offset: 100 << 10}, off: 100 << 10, n: 100 << 10},
		{name: "into the hole", file: sealed, off: 200 << 10, n: 100 << 10},
		{name: "in the hole", file: sealed, off: 300 << 10, n: 4096},
		{name: "past the end", file: sealed, off: size - 4096, n: 8192},
		{name: "empty", file: sealed, off: 0, n: 0},
		{name: "trimmed", file: sealed, off: 600 << 10, n: 64 << 10, trim: true},
		{name: "read-only", file: sealed, opts: sources.FileOptions{ReadOnly: true}, off: 0, n: 4096},
		{name: "unsealed", file: unsealed, off: 0, n: 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mf := tt.file(t)
			dup, err := unix.Dup(int(mf.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(dup)
			f, err := sources.NewFile(mf, "memfd", tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if tt.trim {
				// Extents first, so that the run of data it finds
				// covers the range until Trim.
				f.Extents(tt.off, tt.n, func(sources.Extent) bool { return true })
				if err := f.Trim(tt.off, tt.n); err != nil {
					t.Fatal(err)
				}
			}
			var before unix.Stat_t
			unix.Fstat(dup, &before)
			b, ok := f.MappedRange(tt.off, tt.n, true)
			if ok != tt.want {
				t.Fatalf("MappedRange(%d, %d) ok = %v, want %v", tt.off, tt.n, ok, tt.want)
			}
			if ok {
				abs := tt.opts.Offset + tt.off
				if !bytes.Equal(b, data[abs:abs+tt.n]) {
					t.Errorf("MappedRange(%d, %d): wrong bytes", tt.off, tt.n)
				}
				// A write shows in the mapping.
				if _, err := f.WriteAt([]byte("new"), tt.off); err != nil {
					t.Fatal(err)
				}
				if string(b[:3]) != "new" {
					t.Errorf("the mapping does not show a write: %q", b[:3])
				}
			}
			var after unix.Stat_t
			unix.Fstat(dup, &after)
			if !ok && after.Blocks != before.Blocks {
				t.Errorf("a refused MappedRange changed the file's blocks from %d to %d", before.Blocks, after.Blocks)
			}
		})
	}
}

// TestFileMappedRangeKnown: without seek, MappedRange lends only a range
// the File already knows to be data: the run Extents found, or the one
// that writes from its start or its end extended; a Trim or Zero empties
// it.
func TestFileMappedRangeKnown(t *testing.T) {
	const size = 1 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	tests := []struct {
		name   string
		setup  func(t *testing.T, f *sources.File)
		off, n int64
		want   bool
	}{
		{"nothing known", func(t *testing.T, f *sources.File) {}, 4096, 4096, false},
		{"after Extents", func(t *testing.T, f *sources.File) {
			f.Extents(0, 4096, func(sources.Extent) bool { return true })
		}, 512 << 10, 4096, true},
		{"after a seek", func(t *testing.T, f *sources.File) {
			if _, ok := f.MappedRange(0, 4096, true); !ok {
				t.Fatal("MappedRange with seek refused data")
			}
		}, 900 << 10, 100 << 10, true},
		{"written from the start", func(t *testing.T, f *sources.File) {
			for off := int64(0); off < 256<<10; off += 64 << 10 {
				if _, err := f.WriteAt(data[off:off+64<<10], off); err != nil {
					t.Fatal(err)
				}
			}
		}, 128 << 10, 128 << 10, true},
		{"past what was written", func(t *testing.T, f *sources.File) {
			f.WriteAt(data[:64<<10], 0)
		}, 60 << 10, 8 << 10, false},
		{"written elsewhere", func(t *testing.T, f *sources.File) {
			f.WriteAt(data[:64<<10], 128<<10)
		}, 128 << 10, 4096, false},
		{"written, then trimmed elsewhere", func(t *testing.T, f *sources.File) {
			f.WriteAt(data[:64<<10], 0)
			f.Trim(512<<10, 4096)
		}, 0, 4096, false},
		{"write region", func(t *testing.T, f *sources.File) {
			if _, _, ok := f.RAMWriteRegion(0, 1<<20); !ok {
				t.Fatal("RAMWriteRegion refused")
			}
		}, 1000, 1 << 19, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := sources.NewFile(sealedMemfd(t, data), "memfd", sources.FileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tt.setup(t, f)
			b, ok := f.MappedRange(tt.off, tt.n, false)
			if ok != tt.want {
				t.Fatalf("MappedRange(%d, %d, false) ok = %v, want %v", tt.off, tt.n, ok, tt.want)
			}
			if ok && !bytes.Equal(b, data[tt.off:tt.off+tt.n]) {
				t.Errorf("MappedRange(%d, %d, false): wrong bytes", tt.off, tt.n)
			}
		})
	}
}
