package filters

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// TestCowConformance runs the suite over a read-only source with data,
// with the overlay in memory and in a file, with a size that is not a
// multiple of the block size.
func TestCowConformance(t *testing.T) {
	t.Parallel()
	want := testData(256<<10+1000, 4)
	tests := []struct {
		name string
		opts func(t *testing.T) CowOptions
	}{
		{name: "memory", opts: func(t *testing.T) CowOptions { return CowOptions{} }},
		{name: "file 512-byte blocks", opts: func(t *testing.T) CowOptions {
			return CowOptions{File: filepath.Join(t.TempDir(), "overlay"), BlockSize: 512}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sourcetest.Run(t, func(t *testing.T) sources.Source {
				c, err := NewCow(roSource(newMemoryWith(t, want)), tt.opts(t))
				if err != nil {
					t.Fatal(err)
				}
				return c
			}, want)
		})
	}
}

// TestCowLeavesSourceAlone: after writes, zeroes and trims through the
// filter, the source holds its old bytes and the filter the new ones.
func TestCowLeavesSourceAlone(t *testing.T) {
	const bs = 4096
	orig := testData(64*bs+100, 5)
	base := newMemoryWith(t, orig)
	c, err := NewCow(base, CowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(orig)
	steps := []struct {
		name string
		do   func() error
		off  int64
		n    int64
		data []byte // what the range reads afterwards; nil: zeros
	}{
		{name: "partial block write", off: 100, n: 10, data: testData(10, 6)},
		{name: "write across blocks", off: 3*bs - 7, n: 2*bs + 14, data: testData(2*bs+14, 7)},
		{name: "whole block write", off: 8 * bs, n: bs, data: testData(bs, 8)},
		{name: "partial zero", off: 10*bs + 5, n: 100},
		{name: "zero across a written block", off: 8*bs - 10, n: bs + 20},
		{name: "trim whole blocks", off: 20 * bs, n: 3 * bs},
		{name: "write the short last block", off: 64*bs + 50, n: 50, data: testData(50, 9)},
	}
	for _, s := range steps {
		var err error
		if s.data != nil {
			_, err = c.WriteAt(s.data, s.off)
			copy(want[s.off:], s.data)
		} else if strings.HasPrefix(s.name, "trim") {
			err = c.Trim(s.off, s.n)
			clear(want[s.off : s.off+s.n])
		} else {
			err = c.Zero(s.off, s.n, false)
			clear(want[s.off : s.off+s.n])
		}
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := mustRead(t, c, 0, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("%s: the filter reads differently from what was written", s.name)
		}
		if got := mustRead(t, base, 0, len(orig)); !bytes.Equal(got, orig) {
			t.Fatalf("%s: the source underneath changed", s.name)
		}
	}
	// A trim that covers no whole block records nothing.
	if err := c.Trim(30*bs+1, bs); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, c, 30*bs, 2*bs); !bytes.Equal(got, orig[30*bs:32*bs]) {
		t.Errorf("a trim of no whole block changed the data")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCowConcurrentCopyUp: goroutines write disjoint bytes of the same
// blocks at once, each write a partial one that copies the block up; no
// write may be lost to another's copy of old data.
func TestCowConcurrentCopyUp(t *testing.T) {
	const bs = 4096
	orig := testData(16*bs, 10)
	c, err := NewCow(newMemoryWith(t, orig), CowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := bytes.Clone(orig)
	const workers = 16
	var wg sync.WaitGroup
	for g := range workers {
		// Worker g writes bytes [g*256, g*256+256) of every block.
		data := testData(256, uint64(100+g))
		for b := range 16 {
			copy(want[b*bs+g*256:], data)
		}
		wg.Go(func() {
			for b := range 16 {
				if _, err := c.WriteAt(data, int64(b*bs+g*256)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got := mustRead(t, c, 0, len(want)); !bytes.Equal(got, want) {
		t.Error("concurrent partial writes to the same blocks lost data")
	}
}

// TestCowKeep: a kept overlay file holds the writes and its map; a second
// filter over the same source continues from it.
func TestCowKeep(t *testing.T) {
	orig := testData(1<<20, 11)
	path := filepath.Join(t.TempDir(), "overlay")
	open := func() *Cow {
		t.Helper()
		c, err := NewCow(newMemoryWith(t, orig), CowOptions{File: path, Keep: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := open()
	w := testData(5000, 12)
	mustWrite(t, c, w, 12345)
	if err := c.Zero(600000, 70000, true); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(orig)
	copy(want[12345:], w)
	clear(want[600000:670000])
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("kept overlay file: %v", err)
	}
	c = open()
	if got := mustRead(t, c, 0, len(want)); !bytes.Equal(got, want) {
		t.Error("a reopened overlay reads differently from what was written")
	}
	// Flush writes the map too: a crash after it loses nothing.
	mustWrite(t, c, []byte("after flush"), 900000)
	copy(want[900000:], "after flush")
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c2 := open() // the same file, as a restarted server would see it
	if got := mustRead(t, c2, 0, len(want)); !bytes.Equal(got, want) {
		t.Error("the map written by Flush does not give back the data")
	}
	c2.Close()
	c.Close()
}

func TestCowFileErrors(t *testing.T) {
	dir := t.TempDir()
	base := func() sources.Source { return newMemoryWith(t, make([]byte, 1<<20)) }
	exists := filepath.Join(dir, "exists")
	os.WriteFile(exists, []byte("not an overlay"), 0o644)
	kept := filepath.Join(dir, "kept")
	c, err := NewCow(base(), CowOptions{File: kept, Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	tests := []struct {
		name string
		src  sources.Source
		opts CowOptions
		want string
	}{
		{name: "exists without keep", src: base(), opts: CowOptions{File: exists},
			want: "cow filter: overlay file " + exists + " exists (remove it, or add keep=true to continue from it)"},
		{name: "not an overlay", src: base(), opts: CowOptions{File: exists, Keep: true},
			want: "cow filter: " + exists + " is not an overlay of a 1048576-byte source with 4096-byte blocks"},
		{name: "other size", src: newMemoryWith(t, make([]byte, 2<<20)), opts: CowOptions{File: kept, Keep: true},
			want: "cow filter: " + kept + " is an overlay of a 1048576-byte source with 4096-byte blocks, not of this 2097152-byte source"},
		{name: "other block size", src: base(), opts: CowOptions{File: kept, Keep: true, BlockSize: 8192},
			want: "cow filter: " + kept + " is an overlay of a 1048576-byte source with 4096-byte blocks, not of this 1048576-byte source with 8192-byte blocks"},
		{name: "no directory", src: base(), opts: CowOptions{File: filepath.Join(dir, "no/such/dir")},
			want: "cow filter: overlay file: open " + dir + "/no/such/dir: no such file or directory"},
		{name: "map too large", src: hugeSource(t), opts: CowOptions{},
			want: "cow filter: the map of 2251799813685248 blocks would take 268435456 MiB (use block-size="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCow(tt.src, tt.opts)
			if err == nil {
				c.Close()
				t.Fatalf("NewCow = nil error, want %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("NewCow = %q, want it to start with %q", err, tt.want)
			}
		})
	}
	if b, _ := os.ReadFile(exists); string(b) != "not an overlay" {
		t.Error("a failed NewCow changed an existing file")
	}
}

func hugeSource(t *testing.T) sources.Source {
	m, err := sources.NewMemory(1<<63 - 1)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCowFileRemoved: without keep, the overlay file goes at Close.
func TestCowFileRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "overlay")
	c, err := NewCow(newMemoryWith(t, make([]byte, 1<<20)), CowOptions{File: path})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, c, []byte("x"), 0)
	if c.Caps().Flush {
		t.Error("Caps().Flush = true for an overlay that is dropped at Close")
	}
	c.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("overlay file after Close: %v, want it gone", err)
	}
}
