package zstd

import (
	"bytes"
	"encoding/binary"
	"testing"

	kzstd "github.com/klauspost/compress/zstd"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

func fuzzSeeds(f *testing.F) [][]byte {
	data := imagetest.Data(6000, 11)
	a := imagetest.Zstd(f, data, "-1")
	zeros := make([]byte, 300<<10)
	return append([][]byte{
		a,
		imagetest.Cat(skippable(5), a, imagetest.Zstd(f, data[:700], "--no-content-size")),
		seekable(f, data, 1000),
		// Frames of zeros, which Extents reports as holes.
		imagetest.Cat(imagetest.Zstd(f, zeros), a, imagetest.Zstd(f, zeros[:5000], "-19")),
		seekable(f, imagetest.Cat(zeros, data), 64<<10),
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
		checkHoles(t, s)
	})
}

// checkHoles reads the first 256 KiB of every hole Extents reports (up to
// 4 MiB in all): what reads must be zeros.
func checkHoles(t *testing.T, s *Source) {
	budget := int64(4 << 20)
	err := s.Extents(0, s.Size(), func(e sources.Extent) bool {
		if e.Kind == sources.ExtentData {
			return true
		}
		b := make([]byte, min(e.Length, 256<<10))
		if _, err := s.ReadAt(b, e.Off); err == nil && !bytes.Equal(b, make([]byte, len(b))) {
			t.Fatalf("hole %+v reads as data", e)
		}
		budget -= int64(len(b))
		return budget > 0
	})
	if err != nil {
		t.Fatalf("Extents: %v", err)
	}
}

// countSeeds are files for FuzzCount: the zstd tool's frames at several
// levels, with and without a content size, and frames whose block fields
// sit at the edges (sequence counts, codes, accuracy logs, literals
// sizes, bitstream ends).
func countSeeds(f *testing.F) [][]byte {
	data := imagetest.Data(150<<10, 12)
	var prose []byte
	for i := 0; len(prose) < 40<<10; i++ {
		prose = append(prose, "etaoinshrdlu etaoin shrdlu\n"[i*i%27])
	}
	seeds := [][]byte{
		imagetest.Zstd(f, data, "-1"),
		imagetest.Zstd(f, data, "-3", "--no-content-size"),
		zstdPipe(f, data[:20000], "-19"),
		zstdPipe(f, prose, "-19"),
		zstdPipe(f, prose[:5000], "-9"),
		zstdPipe(f, data, "--fast=3"),
		zstdPipe(f, nil),
		bomb(f, 3),
		{},
	}
	desc := func(mode byte, d ...byte) []byte {
		return craft(0x58, cblock(true, append([]byte{0, 1, mode}, d...)...))
	}
	return append(seeds,
		craft(0x58, seqs(1, 1, 1, 0, 0, 0x01)),
		craft(0x58, seqs(0, 0x7F00+0xFFFF, 0, 0, 0, 0x01)),
		craft(0x58, seqs(0, 0x7F00, 35, 31, 52, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80)),
		craft(0x58, seqs(0, 1, 36, 32, 53, 0x01)),
		craft(0x58, seqs(0, 1, 0, 0, 0, 0x00)),
		craft(0, seqs(0, 342, 0, 0, 0, 0x01)),
		desc(0x80, 0x0F, 0xFF, 0xFF, 0xFF),
		desc(0xA8, 0x04, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x01),
		desc(0xFC, 0x01),
		desc(0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF),
		craft(0x58, cblock(true, 0xFC, 0xFF, 0xFF, 0)),
		craft(0x58, cblock(true, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0)),
		craft(0x58, cblock(true, 0x03, 0x10, 0x00, 0)),
		craft(0xFF, blockHead(true, 0, 0)),
	)
}

// FuzzCount counts arbitrary bytes as a frame, and the frames found in
// them: no panic, errors of one line, and where the decoder decodes a
// frame the count is the bytes it made.
func FuzzCount(f *testing.F) {
	for _, s := range countSeeds(f) {
		f.Add(s)
	}
	dec, err := kzstd.NewReader(nil, kzstd.WithDecoderConcurrency(1), kzstd.WithDecoderMaxWindow(8<<20), kzstd.WithDecoderMaxMemory(32<<20))
	if err != nil {
		f.Fatal(err)
	}
	defer dec.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		c := newCounter(r, 8<<20)
		if _, err := c.frame(Frame{CSize: int64(len(data))}, 1<<40); err != nil {
			checkCorrupt(t, data, err, "")
		}
		walkFrames(r, int64(len(data)), func(fr Frame) error {
			n, err := c.frame(fr, 1<<40)
			if err != nil {
				checkCorrupt(t, data, err, "")
			}
			out, derr := dec.DecodeAll(data[fr.COff:fr.COff+fr.CSize], nil)
			if derr == nil && (err != nil || n != int64(len(out))) {
				t.Fatalf("frame at %d decodes to %d bytes; count = %d, %v", fr.COff, len(out), n, err)
			}
			return nil
		})
	})
}
