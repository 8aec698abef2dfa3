package zstd

import (
	"bytes"
	"testing"

	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

func fuzzSeeds(f *testing.F) [][]byte {
	data := imagetest.Data(6000, 11)
	a := imagetest.Zstd(f, data, "-1")
	return [][]byte{
		a,
		imagetest.Cat(skippable(5), a, imagetest.Zstd(f, data[:700], "--no-content-size")),
		seekable(f, data, 1000),
	}
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
