package zstd

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/pack"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// seekable packs data into the seekable format with nbdloop pack.
func seekable(t testing.TB, data []byte, frame int64) []byte {
	t.Helper()
	var out bytes.Buffer
	if _, err := pack.Pack(&out, bytes.NewReader(data), int64(len(data)), pack.Options{Format: pack.Zstd, BlockSize: frame, Level: 1}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// skippable is a skippable frame of n bytes.
func skippable(n int) []byte {
	b := []byte{0x50, 0x2A, 0x4D, 0x18, byte(n), byte(n >> 8), 0, 0}
	return append(b, make([]byte, n)...)
}

func TestZstdFixtures(t *testing.T) {
	a := imagetest.Data(3<<20+100, 1)
	b := imagetest.Data(1<<20+7, 2)
	az := imagetest.Zstd(t, a)
	bz := imagetest.Zstd(t, b, "-19")
	var frames [][]byte
	for off := 0; off < len(b); off += 200 << 10 {
		frames = append(frames, imagetest.Zstd(t, b[off:min(len(b), off+200<<10)], "-1"))
	}
	tests := []struct {
		name     string
		file     []byte
		want     []byte
		frames   int
		seekable bool
	}{
		{name: "zstd", file: az, want: a, frames: 1},
		{name: "zstd --no-content-size", file: imagetest.Zstd(t, b, "--no-content-size"), want: b, frames: 1},
		{name: "zstd -T2 --no-content-size of many frames", file: imagetest.Cat(imagetest.Zstd(t, a, "--no-content-size"), imagetest.Zstd(t, b, "--no-content-size")), want: imagetest.Cat(a, b), frames: 2},
		{name: "cat a.zst b.zst", file: imagetest.Cat(az, bz), want: imagetest.Cat(a, b), frames: 2},
		{name: "many frames", file: imagetest.Cat(frames...), want: b, frames: len(frames)},
		{name: "skippable frames", file: imagetest.Cat(skippable(10), az, skippable(300), bz), want: imagetest.Cat(a, b), frames: 2},
		{name: "seekable", file: seekable(t, a, 256<<10), want: a, frames: 13, seekable: true},
		{name: "seekable, frames of 1 byte more", file: seekable(t, b, 64<<10+1), want: b, frames: 16, seekable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := imagetest.Open(t, Open, tt.file, Options{})
			defer s.Close()
			if len(s.Frames()) != tt.frames || s.Seekable() != tt.seekable {
				t.Errorf("%d frames, seekable %v; want %d, %v", len(s.Frames()), s.Seekable(), tt.frames, tt.seekable)
			}
			imagetest.CheckReads(t, s, tt.want)
		})
	}
}

func TestZstdConformance(t *testing.T) {
	data := imagetest.Data(2<<20, 4)
	file := seekable(t, data, 128<<10)
	sourcetest.Run(t, func(t *testing.T) sources.Source { return imagetest.Open(t, Open, file, Options{}) }, data)
}

// A single large frame is decoded once into the spill file, with a hint.
func TestZstdSingleFrameSpill(t *testing.T) {
	old := singleSpill
	singleSpill = 1 << 20
	defer func() { singleSpill = old }()
	data := imagetest.Data(3<<20, 5)
	file := imagetest.Zstd(t, data)
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		s := imagetest.Open(t, Open, file, Options{TempDir: t.TempDir()})
		imagetest.CheckWarnings(t, s.Warnings(), "single 3 MiB frame")
		return s
	}, data)
}

// Frames over 32 MiB decode through a streaming decoder.
func TestZstdLargeFrames(t *testing.T) {
	data := imagetest.Data(70<<20, 6)
	file := imagetest.Cat(imagetest.Zstd(t, data[:35<<20], "-1"), imagetest.Zstd(t, data[35<<20:], "-1"))
	s := imagetest.Open(t, Open, file, Options{})
	defer s.Close()
	for _, off := range []int64{36 << 20, 1 << 20, 69 << 20} {
		got := make([]byte, 100000)
		if _, err := s.ReadAt(got, off); err != nil || !bytes.Equal(got, data[off:off+100000]) {
			t.Errorf("ReadAt(off=%d) = %v, or wrong bytes", off, err)
		}
	}
}

func TestZstdErrors(t *testing.T) {
	data := imagetest.Data(1<<20, 8)
	good := imagetest.Zstd(t, data)
	seek := seekable(t, data, 256<<10)
	tests := []struct {
		name    string
		file    []byte
		openErr string
		readErr string
	}{
		{name: "truncated", file: good[:len(good)-100], openErr: "truncated"},
		{name: "not zstd", file: bytes.Repeat([]byte{3}, 100), openErr: "not a zstd file"},
		{name: "garbage after the frames", file: imagetest.Cat(good, []byte("garbage!!")), openErr: "no zstd frame magic after the previous frame"},
		{name: "seek table entry", file: imagetest.Flip(seek, len(seek)-9-8+1), openErr: "the seek table's frames add up"},
		{name: "seek table frame", file: imagetest.Flip(seek, len(seek)-9-4*8-8), openErr: "no seek table frame"},
		{name: "compressed data", file: imagetest.Flip(good, len(good)/2), readErr: "corrupt zstd data"},
		{name: "checksum", file: imagetest.Flip(good, len(good)-1), readErr: "corrupt zstd data"},
		// The count of a frame without a content size reads no content:
		// damaged literals are found by the first read.
		{name: "no content size, damaged literals", file: imagetest.Flip(imagetest.Zstd(t, data, "--no-content-size"), 1000), readErr: "corrupt zstd data"},
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
			} else if strings.Contains(err.Error(), "corrupt zstd data") && !errors.Is(err, ErrCorrupt) {
				t.Errorf("ReadAt(whole) = %v, not errors.Is ErrCorrupt", err)
			}
		})
	}
}

func TestZstdReadOnly(t *testing.T) {
	s := imagetest.Open(t, Open, imagetest.Zstd(t, imagetest.Data(4096, 1)), Options{})
	defer s.Close()
	if _, err := s.WriteAt([]byte{1}, 0); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("WriteAt = %v, want ErrReadOnly", err)
	}
}
