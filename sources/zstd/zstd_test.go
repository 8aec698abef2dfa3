package zstd

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/pack"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

func testData(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	words := []string{"nbdloop ", "block ", "device ", "zstd ", "sector ", "\n"}
	for i := 0; i < n; i += 4096 {
		end := min(n, i+4096)
		switch rng.IntN(4) {
		case 0:
		case 1:
			for j := i; j < end; j++ {
				b[j] = byte(rng.Uint32())
			}
		default:
			for j := i; j < end; {
				j += copy(b[j:end], words[rng.IntN(len(words))])
			}
		}
	}
	return b
}

// zstdTool compresses data with the real zstd, from a file (so that the
// frame header holds the content size, unless --no-content-size).
func zstdTool(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Fatal("zstd not found: install zstd (scripts/install-deps.sh)")
	}
	f, err := os.CreateTemp("", "zstdtest")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	f.Write(data)
	f.Close()
	cmd := exec.Command("zstd", append([]string{"-c", "-q"}, append(args, f.Name())...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("zstd %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

// seekable packs data into the seekable format with nbdloop pack.
func seekable(t testing.TB, data []byte, frame int64) []byte {
	t.Helper()
	var out bytes.Buffer
	if _, err := pack.Pack(&out, bytes.NewReader(data), int64(len(data)), pack.Options{Format: pack.Zstd, BlockSize: frame, Level: 1}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// skippable is a skippable frame of n bytes.
func skippable(n int) []byte {
	b := []byte{0x50, 0x2A, 0x4D, 0x18, byte(n), byte(n >> 8), 0, 0}
	return append(b, make([]byte, n)...)
}

func open(t *testing.T, file []byte, opts Options) *Source {
	t.Helper()
	s, err := Open(bytes.NewReader(file), int64(len(file)), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func checkReads(t *testing.T, s *Source, want []byte) {
	t.Helper()
	if s.Size() != int64(len(want)) {
		t.Fatalf("Size() = %d, want %d", s.Size(), len(want))
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for k := 0; k < 15; k++ {
				off := rng.Int64N(s.Size())
				n := min(s.Size()-off, 1+rng.Int64N(300<<10))
				got := make([]byte, n)
				if _, err := s.ReadAt(got, off); err != nil {
					t.Errorf("ReadAt(off=%d, len=%d) = %v", off, n, err)
					return
				}
				if !bytes.Equal(got, want[off:off+n]) {
					t.Errorf("ReadAt(off=%d, len=%d): bytes differ from the original", off, n)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := make([]byte, s.Size())
	if _, err := s.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Errorf("ReadAt(whole) = %v, or bytes differ", err)
	}
}

func TestZstdFixtures(t *testing.T) {
	a := testData(3<<20+100, 1)
	b := testData(1<<20+7, 2)
	az := zstdTool(t, a)
	bz := zstdTool(t, b, "-19")
	var frames [][]byte
	for off := 0; off < len(b); off += 200 << 10 {
		frames = append(frames, zstdTool(t, b[off:min(len(b), off+200<<10)], "-1"))
	}
	tests := []struct {
		name     string
		file     []byte
		want     []byte
		frames   int
		seekable bool
	}{
		{name: "zstd", file: az, want: a, frames: 1},
		{name: "zstd --no-content-size", file: zstdTool(t, b, "--no-content-size"), want: b, frames: 1},
		{name: "zstd -T2 --no-content-size of many frames", file: cat(zstdTool(t, a, "--no-content-size"), zstdTool(t, b, "--no-content-size")), want: cat(a, b), frames: 2},
		{name: "cat a.zst b.zst", file: cat(az, bz), want: cat(a, b), frames: 2},
		{name: "many frames", file: cat(frames...), want: b, frames: len(frames)},
		{name: "skippable frames", file: cat(skippable(10), az, skippable(300), bz), want: cat(a, b), frames: 2},
		{name: "seekable", file: seekable(t, a, 256<<10), want: a, frames: 13, seekable: true},
		{name: "seekable, frames of 1 byte more", file: seekable(t, b, 64<<10+1), want: b, frames: 16, seekable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, tt.file, Options{})
			defer s.Close()
			if len(s.Frames()) != tt.frames || s.Seekable() != tt.seekable {
				t.Errorf("%d frames, seekable %v; want %d, %v", len(s.Frames()), s.Seekable(), tt.frames, tt.seekable)
			}
			checkReads(t, s, tt.want)
		})
	}
}

func TestZstdConformance(t *testing.T) {
	data := testData(2<<20, 4)
	file := seekable(t, data, 128<<10)
	sourcetest.Run(t, func(t *testing.T) sources.Source { return open(t, file, Options{}) }, data)
}

// A single large frame is decoded once into the spill file, with a hint.
func TestZstdSingleFrameSpill(t *testing.T) {
	old := singleSpill
	singleSpill = 1 << 20
	defer func() { singleSpill = old }()
	data := testData(3<<20, 5)
	file := zstdTool(t, data)
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		s := open(t, file, Options{TempDir: t.TempDir()})
		if !strings.Contains(strings.Join(s.Warnings(), ""), "single 3 MiB frame") {
			t.Errorf("Warnings() = %q, want the single-frame hint", s.Warnings())
		}
		return s
	}, data)
}

// Frames over 32 MiB decode through a streaming decoder.
func TestZstdLargeFrames(t *testing.T) {
	data := testData(70<<20, 6)
	file := cat(zstdTool(t, data[:35<<20], "-1"), zstdTool(t, data[35<<20:], "-1"))
	s := open(t, file, Options{})
	defer s.Close()
	for _, off := range []int64{36 << 20, 1 << 20, 69 << 20} {
		got := make([]byte, 100000)
		if _, err := s.ReadAt(got, off); err != nil || !bytes.Equal(got, data[off:off+100000]) {
			t.Errorf("ReadAt(off=%d) = %v, or wrong bytes", off, err)
		}
	}
}

func TestZstdErrors(t *testing.T) {
	data := testData(1<<20, 8)
	good := zstdTool(t, data)
	seek := seekable(t, data, 256<<10)
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0x55
		return c
	}
	tests := []struct {
		name    string
		file    []byte
		openErr string
		readErr string
	}{
		{name: "truncated", file: good[:len(good)-100], openErr: "truncated"},
		{name: "not zstd", file: bytes.Repeat([]byte{3}, 100), openErr: "not a zstd file"},
		{name: "garbage after the frames", file: cat(good, []byte("garbage!!")), openErr: "no zstd frame magic after the previous frame"},
		{name: "seek table entry", file: flip(seek, len(seek)-9-8+1), openErr: "the seek table's frames add up"},
		{name: "seek table frame", file: flip(seek, len(seek)-9-4*8-8), openErr: "no seek table frame"},
		{name: "compressed data", file: flip(good, len(good)/2), readErr: "corrupt zstd data"},
		{name: "checksum", file: flip(good, len(good)-1), readErr: "corrupt zstd data"},
		{name: "no content size, damaged", file: flip(zstdTool(t, data, "--no-content-size"), 1000), openErr: "corrupt zstd data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(bytes.NewReader(tt.file), int64(len(tt.file)), Options{})
			if tt.openErr != "" {
				if err == nil {
					s.Close()
					t.Fatalf("Open = nil error, want %q", tt.openErr)
				}
				if !strings.Contains(err.Error(), tt.openErr) {
					t.Errorf("Open = %q, want it to contain %q", err, tt.openErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open = %v", err)
			}
			defer s.Close()
			got := make([]byte, s.Size())
			if _, err := s.ReadAt(got, 0); err == nil || !strings.Contains(err.Error(), tt.readErr) {
				t.Errorf("ReadAt(whole) = %v, want an error containing %q", err, tt.readErr)
			}
		})
	}
}

func TestZstdReadOnly(t *testing.T) {
	s := open(t, zstdTool(t, testData(4096, 1)), Options{})
	defer s.Close()
	if _, err := s.WriteAt([]byte{1}, 0); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("WriteAt = %v, want ErrReadOnly", err)
	}
}
