package compressed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/blockcache"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// closeCounter is a file that counts its Close calls.
type closeCounter struct {
	*bytes.Reader
	closes int
}

func (c *closeCounter) Close() error { c.closes++; return nil }

// newStored is an Image whose "compressed" file is the data itself, in
// segments of the given sizes: each segment decodes to its own bytes.
func newStored(t *testing.T, data []byte, file io.ReaderAt, release func(), sizes ...int64) *Image {
	t.Helper()
	var segs []blockcache.Segment
	var off int64
	for _, n := range sizes {
		segs = append(segs, blockcache.Segment{Off: off, Size: n})
		off += n
	}
	errRO := fmt.Errorf("test images are read-only: %w", sources.ErrReadOnly)
	m, err := New(Config{
		File: file, ReadOnly: errRO, Warnings: []string{"a warning"}, Release: release,
		Segments: segs,
		Open: func(i int) (io.Reader, error) {
			return io.NewSectionReader(bytes.NewReader(data), segs[i].Off, segs[i].Size), nil
		},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &m
}

func TestImageConformance(t *testing.T) {
	data := bytes.Repeat([]byte("compressed image "), 200000)
	n := int64(len(data))
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		return newStored(t, data, bytes.NewReader(data), nil, n/3, n/3, n-2*(n/3))
	}, data)
}

// Close closes the cache, then calls Release and closes the file, each
// once; modifying calls fail with the format's error.
func TestImageCloseAndReadOnly(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 4096)
	file := &closeCounter{Reader: bytes.NewReader(data)}
	released := 0
	m := newStored(t, data, file, func() { released++ }, 4096)
	if _, err := m.WriteAt([]byte{1}, 0); !errors.Is(err, sources.ErrReadOnly) || !strings.Contains(err.Error(), "test images") {
		t.Errorf("WriteAt = %v, want the format's read-only error", err)
	}
	if got := m.Warnings(); len(got) != 1 || got[0] != "a warning" {
		t.Errorf("Warnings() = %q, want [a warning]", got)
	}
	for i := 0; i < 2; i++ {
		if err := m.Close(); err != nil {
			t.Errorf("Close #%d = %v", i+1, err)
		}
	}
	if file.closes != 1 || released != 1 {
		t.Errorf("file closed %d times, released %d times, want 1, 1", file.closes, released)
	}
	if _, err := m.ReadAt(make([]byte, 10), 0); !errors.Is(err, blockcache.ErrClosed) {
		t.Errorf("ReadAt after Close = %v, want blockcache.ErrClosed", err)
	}
}

func TestSpillSingle(t *testing.T) {
	names := Names{Format: "zstd", Segment: "frame", Ext: ".zst"}
	tests := []struct {
		name       string
		sizes      []int64
		sequential bool
		tempDir    string
		want       string // "": not spilled
	}{
		{name: "large single segment", sizes: []int64{3 << 20}, tempDir: "/big",
			want: "the zstd file is a single 3 MiB frame: it is decoded once, in the background, into a temporary file in /big, and reads wait for it (for fast random access repack it: nbdloop pack IMAGE -o NEW.zst)"},
		{name: "default directory", sizes: []int64{3 << 20}, want: "temporary file in $TMPDIR,"},
		{name: "at the threshold", sizes: []int64{1 << 20}},
		{name: "sequential", sizes: []int64{3 << 20}, sequential: true},
		{name: "two segments", sizes: []int64{3 << 20, 3 << 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var segs []blockcache.Segment
			for _, n := range tt.sizes {
				segs = append(segs, blockcache.Segment{Size: n})
			}
			got := SpillSingle(segs, 1<<20, tt.sequential, tt.tempDir, names)
			if !strings.Contains(got, tt.want) || (tt.want == "") != (got == "") {
				t.Errorf("SpillSingle = %q, want %q", got, tt.want)
			}
			if segs[0].Spill != (tt.want != "") {
				t.Errorf("segment 0 Spill = %v, want %v", segs[0].Spill, tt.want != "")
			}
		})
	}
}

func TestCountReader(t *testing.T) {
	c := &CountReader{R: strings.NewReader("0123456789")}
	buf := make([]byte, 4)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	if c.N != 10 {
		t.Errorf("N = %d, want 10", c.N)
	}
}
