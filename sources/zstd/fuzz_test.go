package zstd

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

func fuzzSeeds(f *testing.F) [][]byte {
	data := imagetest.Data(6000, 11)
	a := imagetest.Zstd(f, data, "-1")
	return append([][]byte{
		a,
		imagetest.Cat(skippable(5), a, imagetest.Zstd(f, data[:700], "--no-content-size")),
		seekable(f, data, 1000),
	}, extremeSeeds(a)...)
}

// extremeSeeds are files whose header fields sit at the edges: content
// sizes, window descriptors, block sizes, seek table counts and entries at
// 0, 1, max-1, max.
func extremeSeeds(good []byte) [][]byte {
	raw := func(n int) []byte { return imagetest.Cat(blockHead(true, 0, n), make([]byte, n)) }
	u32 := func(a, b uint32) []byte {
		return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, a), b)
	}
	out := [][]byte{
		rleBomb(4, 0xAA),
		rleBomb(1, 0),
		imagetest.Cat(frameHead(0x58, 0, 0, false), blockHead(true, 1, 128<<10), []byte{1}),
		imagetest.Cat(frameHead(0x58, 0, 0, false), blockHead(true, 1, 128<<10+1), []byte{1}),
		imagetest.Cat(frameHead(0x58, 0, 0, false), blockHead(true, 2, 1), []byte{0}),
		imagetest.Cat(frameHead(0xFF, 0, 0, false), raw(1)),
		imagetest.Cat(frameHead(0, 0, 0, false), raw(0)),
		imagetest.Cat(frameHead(0, 1, 1, true), raw(1)),
		imagetest.Cat(frameHead(0, 255, 1, true), raw(1)),
		imagetest.Cat(frameHead(0x58, 256, 2, false), raw(1)),
		imagetest.Cat(frameHead(0x58, 1<<62, 8, false), raw(10)),
		imagetest.Cat(frameHead(0x58, 1<<62-1, 8, false), raw(10)),
		imagetest.Cat(frameHead(0x58, 1<<64-1, 8, false), raw(10)),
		imagetest.Cat(frameHead(0x58, 1<<32-1, 4, false), raw(10)),
		imagetest.Cat(good, seekFooter(0, nil)),
		imagetest.Cat(good, seekFooter(1, u32(uint32(len(good)), 0))),
		imagetest.Cat(good, seekFooter(1, u32(uint32(len(good)), 1<<32-1))),
		imagetest.Cat(good, seekFooter(1, u32(1<<32-1, 1<<32-1))),
		imagetest.Cat(good, seekFooter(1<<32-1, nil)),
		imagetest.Cat(good, seekFooter(1<<24, nil)),
		imagetest.Cat(good, seekFooter(2, u32(1, 1))),
		imagetest.Cat(good, []byte{0x50, 0x2A, 0x4D, 0x18, 0xFF, 0xFF, 0xFF, 0xFF}),
		imagetest.Cat(good, []byte{0x5F, 0x2A, 0x4D, 0x18, 0, 0, 0, 0}),
	}
	return out
}

// FuzzZstdFrames feeds arbitrary bytes to the seek table and frame
// parsers: no panic, no allocation sized by an unchecked field, and frames
// that lie inside the file, in order.
func FuzzZstdFrames(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		var frames []Frame
		reserve := func(n int) error {
			if int64(n) > size/8 {
				t.Fatalf("seek table of %d frames accepted in %d bytes", n, size)
			}
			return nil
		}
		emit := func(f Frame) error { frames = append(frames, f); return nil }
		ok, err := seekTable(bytes.NewReader(data), size, reserve, emit)
		if err != nil {
			return
		}
		if !ok {
			if err = walkFrames(bytes.NewReader(data), size, emit); err != nil {
				return
			}
		}
		var end int64
		for i, fr := range frames {
			if fr.COff < end || fr.CSize <= 0 || fr.COff+fr.CSize > size {
				t.Fatalf("frame %d at %d+%d: out of order or outside the %d-byte file", i, fr.COff, fr.CSize, size)
			}
			end = fr.COff + fr.CSize
			if fr.USize < 0 && fr.Bound <= 0 || fr.USize >= 0 && fr.Bound != 0 {
				t.Fatalf("frame %d: USize %d, Bound %d", i, fr.USize, fr.Bound)
			}
		}
	})
}

// FuzzZstd opens arbitrary bytes and reads what opens: no panic, and a
// bounded amount of work (the decoder's window and memory are limited by
// the cache size).
func FuzzZstd(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Open(bytes.NewReader(data), int64(len(data)), Options{CacheSize: 8 << 20, Readahead: -1, TempDir: t.TempDir()})
		if err != nil {
			return
		}
		defer s.Close()
		imagetest.ReadEnds(s, 64<<10)
	})
}
