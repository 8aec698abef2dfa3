package zstd

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// frameHead is a frame header: with a window descriptor (exponent wexp)
// unless fcs is given with single, and a content size of fcsLen bytes.
func frameHead(wd byte, fcs uint64, fcsLen int, single bool) []byte {
	b := binary.LittleEndian.AppendUint32(nil, frameMagic)
	fhd := byte(map[int]byte{0: 0, 1: 0, 2: 1, 4: 2, 8: 3}[fcsLen]) << 6
	if single {
		fhd |= 0x20
	}
	b = append(b, fhd)
	if !single {
		b = append(b, wd)
	}
	switch fcsLen {
	case 1:
		b = append(b, byte(fcs))
	case 2:
		b = binary.LittleEndian.AppendUint16(b, uint16(fcs-256))
	case 4:
		b = binary.LittleEndian.AppendUint32(b, uint32(fcs))
	case 8:
		b = binary.LittleEndian.AppendUint64(b, fcs)
	}
	return b
}

// blockHead is a block header.
func blockHead(last bool, typ, size int) []byte {
	v := uint32(size)<<3 | uint32(typ)<<1
	if last {
		v |= 1
	}
	return []byte{byte(v), byte(v >> 8), byte(v >> 16)}
}

// rleBomb is a frame of n RLE blocks of 128 KiB of b, without a content
// size: 4 bytes of file per 128 KiB.
func rleBomb(n int, b byte) []byte {
	out := frameHead(0x58, 0, 0, false) // window 8 MiB
	for i := 0; i < n; i++ {
		out = append(out, blockHead(i == n-1, 1, 128<<10)...)
		out = append(out, b)
	}
	return out
}

// seekFooter is a seek table frame of n entries of entry bytes (their
// contents left to the caller) and its footer.
func seekFooter(n uint32, entries []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, seekTableMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)+seekFooterLen))
	b = append(b, entries...)
	b = binary.LittleEndian.AppendUint32(b, n)
	b = append(b, 0)
	return binary.LittleEndian.AppendUint32(b, seekableMagic)
}

// TestHostileZstd opens zstd files built to exhaust memory or disk or to
// overflow: each is refused at open with a one-line error naming the
// figures, or serves the right bytes, within a 64 MiB metadata budget.
func TestHostileZstd(t *testing.T) {
	o := imagetest.NewOutside(t)
	const budget = 64 << 20
	data := imagetest.Data(3<<20, 31)
	good := imagetest.Zstd(t, data, "-1")
	noSize := imagetest.Zstd(t, data, "-1", "--no-content-size")
	big := imagetest.Zstd(t, make([]byte, 48<<20), "-1")
	maxWindow := bytes.Clone(noSize)
	maxWindow[5] = 0xFF // window descriptor: 2^41 + 7/8
	// 2^24 seek table entries of 8 bytes after 2^24 frames of 1 byte:
	// a 144 MiB sparse file.
	const n = 1 << 24
	manyFrames := func(t *testing.T, path string) {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		table := seekFooter(n, nil)
		if _, err := f.WriteAt(table[:8], n); err != nil { // the table's frame header
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint32(table[4:], n*8+seekFooterLen)
		if _, err := f.WriteAt(table[:8], n); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(table[8:], n+8+n*8); err != nil {
			t.Fatal(err)
		}
	}
	oneRaw := imagetest.Cat(blockHead(true, 0, 10), make([]byte, 10))
	tests := []struct {
		name    string
		write   func(t *testing.T, path string)
		file    []byte
		opts    Options
		openErr string
		want    []byte
	}{
		{name: "2^24 seek table entries", write: manyFrames, openErr: "(16777216 frames) needs 512 MiB of memory, beyond the metadata limit of 64 MiB"},
		{name: "RLE bomb without content size, 8 GiB from 256 KiB", file: rleBomb(65536, 0xAA), opts: Options{SpillLimit: 1 << 30},
			openErr: "the image's 8 GiB of uncompressed data would be decoded into a temporary file, but at most 1 GiB may be decoded"},
		{name: "RLE bomb of zeros, within the limit", file: rleBomb(64, 0), want: make([]byte, 8<<20)},
		{name: "RLE block over 128 KiB", file: imagetest.Cat(frameHead(0x58, 0, 0, false), blockHead(true, 1, 128<<10+1), []byte{1}), openErr: "larger than 128 KiB"},
		{name: "content size 2^62", file: imagetest.Cat(frameHead(0x58, 1<<62, 8, false), oneRaw), openErr: "frame claims 4611686018427387904 uncompressed bytes, but its blocks hold 10"},
		{name: "content size 2^64-1", file: imagetest.Cat(frameHead(0x58, 1<<64-1, 8, false), oneRaw), openErr: "content size out of range"},
		{name: "content size 11, one raw block of 10", file: imagetest.Cat(frameHead(0, 11, 1, true), oneRaw), openErr: "claims 11 uncompressed bytes"},
		{name: "content size 0, one raw block of 10", file: imagetest.Cat(frameHead(0, 0, 1, true), oneRaw), openErr: "claims 0 uncompressed bytes"},
		{name: "content size 10", file: imagetest.Cat(frameHead(0, 10, 1, true), oneRaw), want: make([]byte, 10)},
		{name: "window at max, no content size", file: maxWindow, openErr: "corrupt zstd data at byte 0"},
		{name: "compressed blocks that could hold 1 GiB", file: imagetest.Cat(frameHead(0x58, 0, 0, false),
			bytes.Repeat(imagetest.Cat(blockHead(false, 2, 1), []byte{0}), 8192), blockHead(true, 2, 1), []byte{0}), opts: Options{SpillLimit: 64 << 20},
			openErr: "zstd frames without a content size may hold up to 1.0 GiB, and at most 64 MiB may be decoded"},
		{name: "no content size, counted", file: noSize, want: data},
		{name: "compressed-block bomb without content size, counted", file: bomb(t, 64), want: bytes.Repeat(bombBlock(), 64)},
		{name: "seek table of 2^32-1 entries", file: imagetest.Cat(good, seekFooter(1<<32-1, nil)), openErr: "does not fit in the file"},
		{name: "seek table entry of 2^32-1 bytes", file: imagetest.Cat(good, seekFooter(1, binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 1<<32-1), 1<<32-1))), openErr: "add up to more than"},
		{name: "seek table entry 2^32-1 bytes from 1", file: imagetest.Cat([]byte{0}, seekFooter(1, binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 1), 1<<32-1))), openErr: "frame of 1 bytes claims 4294967295 uncompressed bytes"},
		{name: "skippable frame of 2^32-1 bytes", file: imagetest.Cat(good, []byte{0x50, 0x2A, 0x4D, 0x18, 0xFF, 0xFF, 0xFF, 0xFF}), openErr: "runs past the end"},
		{name: "single frame over the spill limit", file: big, opts: Options{SpillLimit: 16 << 20}, openErr: "the image's 48 MiB of uncompressed data would be decoded into a temporary file, but at most 16 MiB"},
		{name: "single frame within the spill limit", file: good, opts: Options{SpillLimit: 16 << 20}, want: data},
	}
	singleSpill = 1 << 20
	defer func() { singleSpill = 32 << 20 }()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(o.Dir, "hostile.zst")
			if tt.write != nil {
				tt.write(t, path)
			} else if err := os.WriteFile(path, tt.file, 0o644); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(path)
			opts := tt.opts
			opts.Budget = sources.NewBudget(budget)
			opts.CacheSize = 64 << 20
			opts.TempDir = t.TempDir()
			got, alloc, err := imagetest.OpenReadAll(t, path, Open, opts)
			switch {
			case tt.openErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.openErr) || strings.Contains(err.Error(), "\n") {
					t.Errorf("Open = %v, want one line containing %q", err, tt.openErr)
				}
			case err != nil:
				t.Errorf("Open and read = %v, want %d bytes", err, len(tt.want))
			case !bytes.Equal(got, tt.want):
				t.Errorf("read %d bytes, not the %d bytes compressed", len(got), len(tt.want))
			}
			// The bytes read and the frames decoded whole are not
			// metadata; a streaming decoder's window is bounded by the
			// cache size.
			if limit := imagetest.AllocBound(int64(budget + 3*len(tt.want) + len(tt.file))); alloc > limit {
				t.Errorf("allocated %s, more than %s", bytesize.Words(int64(alloc)), bytesize.Words(int64(limit)))
			}
			t.Logf("case %d: %v; allocated %s", i, err, bytesize.Words(int64(alloc)))
			o.Check(t, tt.name)
		})
	}
}
