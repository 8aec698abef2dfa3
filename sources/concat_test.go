package sources_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// randomBytes returns n reproducible random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// memoryParts returns Memory sources of the given sizes filled with random
// bytes, and their concatenation.
func memoryParts(t testing.TB, sizes []int) ([]sources.Source, []byte) {
	t.Helper()
	var parts []sources.Source
	var all []byte
	for i, n := range sizes {
		data := randomBytes(n, uint64(i))
		m := newMemory(t, int64(n))
		if _, err := m.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, m)
		all = append(all, data...)
	}
	return parts, all
}

// fileParts writes files of the given sizes filled with random bytes and
// opens them.
func fileParts(t testing.TB, dir string, sizes []int, ro bool) ([]sources.Source, []string, []byte) {
	t.Helper()
	var parts []sources.Source
	var names []string
	var all []byte
	for i, n := range sizes {
		data := randomBytes(n, uint64(i)+100)
		path := filepath.Join(dir, "part"+string(rune('a'+i))+".img")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := sources.OpenFile(path, sources.FileOptions{ReadOnly: ro})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, f)
		names = append(names, path)
		all = append(all, data...)
	}
	return parts, names, all
}

func TestConcatConformance(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int
		files bool
		ro    bool
	}{
		{name: "memory aligned", sizes: []int{64 << 10, 32 << 10, 512}},
		// Boundaries inside sectors and pages: requests straddle them.
		{name: "memory unaligned", sizes: []int{1000, 24, 70001, 102400 - 71025}},
		{name: "one part", sizes: []int{8192}},
		{name: "many small", sizes: []int{1, 2, 3, 500, 6, 512, 4096, 3072}},
		{name: "files unaligned", sizes: []int{1000, 24, 70000, 512*150 - 71024}, files: true},
		{name: "files read-only", sizes: []int{777, 65536, 1024 - 777}, files: true, ro: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []byte
			open := func(t *testing.T) sources.Source {
				var parts []sources.Source
				var names []string
				if tt.files {
					parts, names, want = fileParts(t, t.TempDir(), tt.sizes, tt.ro)
				} else {
					parts, want = memoryParts(t, tt.sizes)
				}
				c, err := sources.NewConcat(parts, sources.ConcatOptions{Names: names, Align: 512})
				if err != nil {
					t.Fatalf("NewConcat = %v", err)
				}
				if c.Padding() != 0 {
					t.Fatalf("Padding() = %d, want 0 for sizes adding up to %d", c.Padding(), len(want))
				}
				return c
			}
			open(t).Close()
			sourcetest.Run(t, open, want)
		})
	}
}

// TestConcatPaddedConformance checks the bytes of the parts of a padded
// concatenation; the padding has its own test.
func TestConcatPaddedConformance(t *testing.T) {
	sizes := []int{1000, 3000, 5}
	_, want := memoryParts(t, sizes)
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		parts, _ := memoryParts(t, sizes)
		c, err := sources.NewConcat(parts, sources.ConcatOptions{Align: 4096})
		if err != nil {
			t.Fatal(err)
		}
		w, err := sources.NewWindow(c, 0, int64(len(want)))
		if err != nil {
			t.Fatal(err)
		}
		return w
	}, want)
}

func TestConcatPadding(t *testing.T) {
	parts, data := memoryParts(t, []int{1000, 30})
	c, err := sources.NewConcat(parts, sources.ConcatOptions{Names: []string{"a.img", "b.img"}, Align: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := c.Padding(), int64(1536-1030); got != want {
		t.Errorf("Padding() = %d, want %d", got, want)
	}
	if got := c.Size(); got != 1536 {
		t.Errorf("Size() = %d, want 1536", got)
	}
	buf := make([]byte, 1536)
	if _, err := c.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:1030], data) || !bytes.Equal(buf[1030:], make([]byte, 506)) {
		t.Errorf("ReadAt(0, 1536) = the parts and then non-zero padding")
	}

	// Zeros to the padding, Zero and Trim are accepted; data is not.
	if _, err := c.WriteAt(make([]byte, 506), 1030); err != nil {
		t.Errorf("WriteAt(zeros, 1030) = %v, want nil", err)
	}
	if err := c.Zero(1000, 536, false); err != nil {
		t.Errorf("Zero(1000, 536) = %v, want nil", err)
	}
	if err := c.Trim(0, 1536); err != nil {
		t.Errorf("Trim(0, 1536) = %v, want nil", err)
	}
	before := make([]byte, 1536)
	c.ReadAt(before, 0)
	p := bytes.Repeat([]byte{7}, 100)
	_, err = c.WriteAt(p, 1000)
	if !errors.Is(err, sources.ErrRegionWrite) || !errors.Is(err, syscall.EIO) {
		t.Errorf("WriteAt(data over the padding) = %v, want ErrRegionWrite (EIO)", err)
	}
	after := make([]byte, 1536)
	c.ReadAt(after, 0)
	if !bytes.Equal(before, after) {
		t.Errorf("a refused write changed the bytes of b.img")
	}
}

// TestConcatSplitsAtBoundaries checks that each byte lands in its file at
// the right offset, reading the files afterwards.
func TestConcatSplitsAtBoundaries(t *testing.T) {
	dir := t.TempDir()
	sizes := []int{1500, 100, 2500}
	parts, names, _ := fileParts(t, dir, sizes, false)
	c, err := sources.NewConcat(parts, sources.ConcatOptions{Names: names, Align: 512})
	if err != nil {
		t.Fatal(err)
	}
	// One write across all three files, then zero across the second.
	p := bytes.Repeat([]byte{0xee}, 1000)
	if _, err := c.WriteAt(p, 1000); err != nil {
		t.Fatal(err)
	}
	if err := c.Zero(1550, 600, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want := [][]struct {
		from, to int
		b        byte
		keep     bool
	}{
		{{0, 1000, 0, true}, {1000, 1500, 0xee, false}},
		{{0, 50, 0xee, false}, {50, 100, 0, false}},
		{{0, 550, 0, false}, {550, 2500, 0, true}},
	}
	for i, name := range names {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		orig := randomBytes(sizes[i], uint64(i)+100)
		if len(got) != sizes[i] {
			t.Fatalf("%s: %d bytes, want %d", name, len(got), sizes[i])
		}
		for _, span := range want[i] {
			for j := span.from; j < span.to; j++ {
				w := span.b
				if span.keep {
					w = orig[j]
				}
				if got[j] != w {
					t.Fatalf("%s: byte %d = %#x, want %#x", filepath.Base(name), j, got[j], w)
				}
			}
		}
	}
}

func TestNewConcatErrors(t *testing.T) {
	dir := t.TempDir()
	rw, _, _ := fileParts(t, dir, []int{512}, false)
	roDir := t.TempDir()
	ro, _, _ := fileParts(t, roDir, []int{512}, true)
	defer rw[0].Close()
	defer ro[0].Close()
	tests := []struct {
		name  string
		parts []sources.Source
		align int64
		want  error
	}{
		{name: "no parts", want: sources.ErrEmpty},
		{name: "mixed read-only", parts: []sources.Source{rw[0], ro[0]}, want: sources.ErrMixedReadOnly},
		{name: "align not a power of two", parts: rw, align: 1000, want: syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sources.NewConcat(tt.parts, sources.ConcatOptions{Align: tt.align})
			if !errors.Is(err, tt.want) {
				t.Errorf("NewConcat = %v, want %v", err, tt.want)
			}
		})
	}
}
