package zstd

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"time"

	kzstd "github.com/klauspost/compress/zstd"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// zstdPipe compresses data fed to the zstd tool through a pipe, as `cat
// disk.img | zstd` does: the frame header has no content size.
func zstdPipe(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	tooltest.Require(t, "zstd")
	cmd := exec.Command("zstd", append([]string{"-c", "-q"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("zstd %s < data: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

// countFile counts every frame of file, content size or not.
func countFile(file []byte, window int64) (int64, error) {
	c := newCounter(bytes.NewReader(file), window)
	var total int64
	err := walkFrames(bytes.NewReader(file), int64(len(file)), func(f Frame) error {
		n, err := c.frame(f, 1<<40)
		total += n
		return err
	})
	return total, err
}

// craft is a frame without a content size, window descriptor wd, of the
// given blocks.
func craft(wd byte, blocks ...[]byte) []byte {
	return imagetest.Cat(append([][]byte{frameHead(wd, 0, 0, false)}, blocks...)...)
}

// cblock is a compressed block of body.
func cblock(last bool, body ...byte) []byte {
	return imagetest.Cat(blockHead(last, 2, len(body)), body)
}

// seqs is a compressed block of lits raw literals and n sequences whose
// codes are given in RLE mode (ll, of, ml), then bitstream.
func seqs(lits, n int, ll, of, ml byte, bitstream ...byte) []byte {
	body := []byte{0x0C | byte(lits&15)<<4, byte(lits >> 4), byte(lits >> 12)} // raw, 3-byte header
	body = append(body, bytes.Repeat([]byte{'z'}, lits)...)
	switch {
	case n < 128:
		body = append(body, byte(n))
	case n < 0x7F00:
		body = append(body, byte(n>>8+128), byte(n))
	default:
		body = append(body, 255, byte(n-0x7F00), byte((n-0x7F00)>>8))
	}
	body = append(body, 0x54, ll, of, ml) // RLE, RLE, RLE
	return cblock(true, append(body, bitstream...)...)
}

// lsb is an LSB-first bitstream of fields {value, width}.
func lsb(fields ...[2]int) []byte {
	var out []byte
	n := 0
	for _, f := range fields {
		for i := 0; i < f[1]; i++ {
			if n%8 == 0 {
				out = append(out, 0)
			}
			out[len(out)-1] |= byte(f[0]>>i&1) << (n % 8)
			n++
		}
	}
	return out
}

// TestCount counts files written by the zstd tool, and crafted ones,
// without decoding them: the count is the size of the data compressed.
func TestCount(t *testing.T) {
	mix := imagetest.Data(6<<20, 41)
	text := bytes.Repeat([]byte("nbdloop serves disk images to the kernel's NBD driver. "), 3<<20/56)
	rng := rand.New(rand.NewPCG(42, 1))
	random := make([]byte, 1<<20)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	zeros := make([]byte, 5<<20)
	// Words of letters drawn unevenly: literals worth Huffman coding,
	// in blocks alike enough to repeat tables.
	prose := make([]byte, 0, 3<<20)
	for len(prose) < 3<<20 {
		for n := 1 + rng.IntN(9); n > 0; n-- {
			prose = append(prose, "etaoinshrdlucmfwypvbgkjqxz"[min(rng.IntN(26), rng.IntN(26))])
		}
		prose = append(prose, " \n"[rng.IntN(2)/1*min(1, rng.IntN(12)/11)])
	}
	prose = prose[:3<<20]
	tests := []struct {
		name string
		file []byte
		want int64
	}{
		{name: "empty, piped", file: zstdPipe(t, nil), want: 0},
		{name: "1 byte, piped", file: zstdPipe(t, text[:1]), want: 1},
		{name: "100 bytes of text, piped", file: zstdPipe(t, text[:100]), want: 100},
		{name: "128 KiB - 1, piped", file: zstdPipe(t, mix[:128<<10-1]), want: 128<<10 - 1},
		{name: "128 KiB, piped", file: zstdPipe(t, mix[:128<<10]), want: 128 << 10},
		{name: "128 KiB + 1, piped", file: zstdPipe(t, mix[:128<<10+1]), want: 128<<10 + 1},
		{name: "5 MiB of zeros, piped", file: zstdPipe(t, zeros), want: 5 << 20},
		{name: "1 MiB random, piped", file: zstdPipe(t, random), want: 1 << 20},
		{name: "3 MiB prose -1, piped", file: zstdPipe(t, prose, "-1"), want: 3 << 20},
		{name: "3 MiB prose -3, piped", file: zstdPipe(t, prose, "-3"), want: 3 << 20},
		{name: "1 MiB prose -9, piped", file: zstdPipe(t, prose[:1<<20], "-9"), want: 1 << 20},
		{name: "1 MiB prose -19, piped", file: zstdPipe(t, prose[:1<<20], "-19"), want: 1 << 20},
		{name: "small frames of prose", file: imagetest.Cat(zstdPipe(t, prose[:300]), zstdPipe(t, prose[:3000], "-19"), zstdPipe(t, prose[:12000], "-19"), zstdPipe(t, prose[:60000], "-3")),
			want: 300 + 3000 + 12000 + 60000},
		{name: "3 MiB text -1, piped", file: zstdPipe(t, text, "-1"), want: int64(len(text))},
		{name: "3 MiB text -19, piped", file: zstdPipe(t, text, "-19"), want: int64(len(text))},
		{name: "6 MiB mix -1 --no-content-size", file: imagetest.Zstd(t, mix, "-1", "--no-content-size"), want: 6 << 20},
		{name: "6 MiB mix -3, piped", file: zstdPipe(t, mix, "-3"), want: 6 << 20},
		{name: "512 KiB mix -19, piped", file: zstdPipe(t, mix[:512<<10], "-19"), want: 512 << 10},
		{name: "512 KiB mix --ultra -22, piped", file: zstdPipe(t, mix[:512<<10], "--ultra", "-22"), want: 512 << 10},
		{name: "6 MiB mix --long=27, piped", file: zstdPipe(t, mix, "-1", "--long=27"), want: 6 << 20},
		{name: "6 MiB mix --fast=5, piped", file: zstdPipe(t, mix, "--fast=5"), want: 6 << 20},
		{name: "6 MiB mix -T2 --no-check, piped", file: zstdPipe(t, mix, "-T2", "--no-check"), want: 6 << 20},
		{name: "1 MiB mix, 1 KiB window, piped", file: zstdPipe(t, mix[:1<<20], "--zstd=wlog=10"), want: 1 << 20},
		{name: "1 MiB text, 64 KiB window, piped", file: zstdPipe(t, text[:1<<20], "-19", "--zstd=wlog=16"), want: 1 << 20},
		{name: "content sizes too", file: imagetest.Cat(imagetest.Zstd(t, mix[:3<<20], "-3"), imagetest.Zstd(t, text[:1000], "-19")), want: 3<<20 + 1000},
		{name: "frames of each kind", file: imagetest.Cat(zstdPipe(t, mix[:1<<20], "-1"), skippable(7), zstdPipe(t, zeros[:300<<10], "-19"), zstdPipe(t, nil), zstdPipe(t, random[:200<<10], "-3")),
			want: 1<<20 + 300<<10 + 200<<10},
		// Sequences of 1 literal and a match of 3 bytes at offset 1.
		{name: "crafted: 1 sequence, RLE codes", file: craft(0x58, seqs(1, 1, 1, 0, 0, 0x01)), want: 4},
		{name: "crafted: 1000 sequences that read no bits", file: craft(0x58, seqs(1000, 1000, 1, 0, 0, 0x01)), want: 4000},
		{name: "crafted: 32600 such sequences", file: craft(0x58, seqs(32600, 32600, 1, 0, 0, 0x01)), want: 130400},
		{name: "crafted: match length code 52, extra bits 0xFFFC", file: craft(0x58, seqs(1, 1, 1, 0, 52, 0xFC, 0xFF, 0x01)), want: 128 << 10},
		{name: "crafted: raw and RLE literals, no sequences", file: craft(0x58, cblock(false, 3<<3, 'a', 'b', 'c', 0), cblock(true, 0xFD, 0xFF, 0x03, 'x', 0)),
			want: 3 + 0x3FFF},
		{name: "crafted: empty raw, RLE", file: craft(0, blockHead(false, 0, 0), blockHead(true, 1, 1024), []byte{7}), want: 1024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := countFile(tt.file, 1<<30)
			if err != nil || got != tt.want {
				t.Errorf("count = %d, %v; want %d", got, err, tt.want)
			}
			// The decoder agrees.
			d, err := kzstd.NewReader(bytes.NewReader(tt.file), kzstd.WithDecoderMaxWindow(1<<30))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if n, err := io.Copy(io.Discard, d); err != nil || n != tt.want {
				t.Errorf("decoded %d bytes, %v; want %d", n, err, tt.want)
			}
			if tt.want == 0 {
				return
			}
			s, err := Open(bytes.NewReader(tt.file), int64(len(tt.file)), Options{CacheSize: 1 << 30})
			if err != nil {
				t.Fatalf("Open = %v", err)
			}
			defer s.Close()
			if s.Size() != tt.want {
				t.Errorf("Size = %d, want %d", s.Size(), tt.want)
			}
		})
	}
}

// TestCountCorrupt counts frames that break the format: each fails with
// one line naming a byte offset within the file.
func TestCountCorrupt(t *testing.T) {
	real := zstdPipe(t, imagetest.Data(200<<10, 43), "-19")
	one := seqs(1, 1, 1, 0, 0, 0x01)
	predefined := func(body ...byte) []byte {
		return cblock(true, append([]byte{0, 1}, body...)...)
	}
	// A literals length table description of accuracy log 5 whose 32
	// symbols have probability 0 each (count 1, no repeat flag).
	var zeros [][2]int
	zeros = append(zeros, [2]int{0, 4})
	for i := 0; i < 36; i++ {
		zeros = append(zeros, [2]int{1, 5}, [2]int{0, 2})
	}
	tests := []struct {
		name   string
		file   []byte
		window int64
		want   string
	}{
		{name: "98047 sequences of 3 bytes", file: craft(0x58, seqs(0, 0x7F00+0xFFFF, 0, 0, 0, 0x01)), want: "block regenerates more than the block maximum of 131072 bytes"},
		{name: "sequences over a 1 KiB window", file: craft(0, seqs(0, 342, 0, 0, 0, 0x01)), want: "block maximum of 1024 bytes"},
		{name: "match of 131074 bytes", file: craft(0x58, seqs(0, 1, 0, 0, 52, 0xFF, 0xFF, 0x01)), want: "block regenerates more than the block maximum"},
		{name: "literals the block lacks", file: craft(0x58, seqs(0, 1, 1, 0, 0, 0x01)), want: "sequences take more literals than the block's 0"},
		{name: "bitstream without end mark", file: craft(0x58, seqs(0, 1, 0, 0, 0, 0x00)), want: "sequence bitstream has no end mark"},
		{name: "bitstream with bits left", file: craft(0x58, seqs(0, 1, 0, 0, 0, 0x03)), want: "1 bits left in the sequence bitstream"},
		{name: "bitstream ends early", file: craft(0x58, seqs(0, 1, 0, 0, 52, 0x01)), want: "sequence bitstream ends before its 1 sequences"},
		{name: "bitstream missing", file: craft(0x58, cblock(true, 0, 1, 0x54, 0, 0, 0)), want: "sequence bitstream has no end mark"},
		{name: "literals length code 36", file: craft(0x58, seqs(0, 1, 36, 0, 0, 0x01)), want: "literals length code 36 in RLE mode is beyond the last, 35"},
		{name: "offset code 32", file: craft(0x58, seqs(0, 1, 0, 32, 0, 0x01)), want: "offset code 32 in RLE mode is beyond the last, 31"},
		{name: "match length code 53", file: craft(0x58, seqs(0, 1, 0, 0, 53, 0x01)), want: "match length code 53 in RLE mode is beyond the last, 52"},
		{name: "RLE symbol missing", file: craft(0x58, cblock(true, 0, 1, 0x54, 0)), want: "offset RLE symbol runs past the end of the block"},
		{name: "reserved mode bits", file: craft(0x58, predefined(0x01)), want: "reserved bits of the symbol compression modes are set"},
		{name: "no compression modes", file: craft(0x58, cblock(true, 0, 1)), want: "sequences section has no compression modes"},
		{name: "repeat mode in the first block", file: craft(0x58, predefined(0xFC, 0x01)), want: "literals length table repeated, but no earlier block of the frame has one"},
		{name: "repeat mode after a block of no sequences", file: craft(0x58, cblock(false, 0, 0), predefined(0x0C, 0x01)), want: "match length table repeated"},
		{name: "literals length accuracy log 10", file: craft(0x58, predefined(0x80, 0x05, 0xFF, 0xFF)), want: "literals length table description: accuracy log 10, more than 9"},
		{name: "offset accuracy log 9", file: craft(0x58, predefined(0x20, 0x04, 0xFF, 0xFF)), want: "offset table description: accuracy log 9, more than 8"},
		{name: "match length accuracy log 20", file: craft(0x58, predefined(0x08, 0x0F, 0xFF, 0xFF)), want: "match length table description: accuracy log 20, more than 9"},
		{name: "table description of probabilities 0", file: craft(0x58, predefined(append([]byte{0x80}, lsb(zeros...)...)...)), want: "literals length table description: probabilities add up to 0, not 32"},
		{name: "table description cut short", file: craft(0x58, predefined(0x80, 0x00)), want: "literals length table description: runs past the end of the block"},
		{name: "zero run past the last code", file: craft(0x58, predefined(append([]byte{0x80}, lsb([2]int{0, 4}, [2]int{1, 5}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{3, 2}, [2]int{0, 8})...)...)), want: "zero probabilities run past code 35"},
		{name: "treeless literals first", file: craft(0x58, cblock(true, 0x03, 0x10, 0x00, 0)), want: "treeless literals, but no earlier block of the frame has a Huffman table"},
		{name: "literals over the block maximum", file: craft(0x58, cblock(true, 0xFC, 0xFF, 0xFF, 0)), want: "1048575 literals, more than the block maximum of 131072"},
		{name: "raw literals past the block", file: craft(0x58, cblock(true, 10<<3, 1, 2, 3)), want: "literals section of 11 bytes runs past the end of the block"},
		{name: "compressed literals past the block", file: craft(0x58, cblock(true, 0x02|0xA0, 0x00, 0xFA, 0)), want: "runs past the end of the block"},
		{name: "literals header past the block", file: craft(0x58, cblock(true, 0x0C)), want: "literals section header runs past the end of the block"},
		{name: "empty compressed block", file: craft(0x58, cblock(true)), want: "compressed block is empty"},
		{name: "no sequences section", file: craft(0x58, cblock(true, 0)), want: "compressed block has no sequences section"},
		{name: "bytes after no sequences", file: craft(0x58, cblock(true, 0, 0, 0xAA)), want: "1 bytes after a sequences section of no sequences"},
		{name: "sequences header cut short", file: craft(0x58, cblock(true, 0, 0xFF, 1)), want: "sequences section header runs past the end of the block"},
		{name: "raw block over a 1 KiB window", file: craft(0, imagetest.Cat(blockHead(true, 0, 1025), make([]byte, 1025))), want: "block of 1025 bytes is larger than the block maximum of 1024"},
		{name: "window beyond the cache size", file: craft(0xFF, one), window: 64 << 20, want: "window, more than the cache size of 64 MiB"},
		{name: "reserved block type", file: craft(0x58, blockHead(true, 3, 0)), want: "reserved block type"},
		{name: "real file, sequence count 32511", file: setSeqCount(t, real, 0xFE, 0xFF), want: "corrupt zstd data at byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			window := tt.window
			if window == 0 {
				window = 1 << 30
			}
			c := newCounter(bytes.NewReader(tt.file), window)
			n, err := c.frame(Frame{CSize: int64(len(tt.file))}, 1<<40)
			checkCorrupt(t, tt.file, err, tt.want)
			if err == nil {
				t.Errorf("count = %d", n)
			}
			if _, err := Open(bytes.NewReader(tt.file), int64(len(tt.file)), Options{CacheSize: window}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// Every byte of the first blocks of a real file set to extremes:
	// counted, or refused in one line.
	for at := 0; at < 1500; at++ {
		for _, v := range []byte{0, 1, 0x7F, 0x80, 0xFE, 0xFF} {
			file := bytes.Clone(real)
			file[at] = v
			c := newCounter(bytes.NewReader(file), 1<<30)
			if _, err := c.frame(Frame{CSize: int64(len(file))}, 1<<40); err != nil {
				checkCorrupt(t, file, err, "")
			}
		}
	}
}

// checkCorrupt fails unless err is a one-line *CorruptError containing
// want at an offset within file.
func checkCorrupt(t *testing.T, file []byte, err error, want string) {
	t.Helper()
	var ce *CorruptError
	switch {
	case !errors.As(err, &ce):
		t.Errorf("count = %v, want a CorruptError containing %q", err, want)
	case !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n"):
		t.Errorf("count = %q, want one line containing %q", err, want)
	case ce.Offset < 0 || ce.Offset > int64(len(file)):
		t.Errorf("count = %q: offset %d outside the %d-byte file", err, ce.Offset, len(file))
	}
}

// setSeqCount rewrites the sequences section header of the first
// compressed block of file, whose literals are compressed, to hdr (of the
// same length as the one it replaces).
func setSeqCount(t *testing.T, file []byte, hdr ...byte) []byte {
	t.Helper()
	h, err := parseFrameHeader(file)
	if err != nil {
		t.Fatal(err)
	}
	p := int(h.size)
	if file[p]>>1&3 != 2 {
		t.Fatalf("block at %d is not compressed", p)
	}
	_, n, err := newCounter(nil, 0).literals(file[p+3:], 0, maxBlock)
	if err != nil {
		t.Fatal(err)
	}
	at := p + 3 + n
	out := bytes.Clone(file)
	if want := map[bool]int{true: 3, false: 2}[out[at] == 255]; out[at] < 128 || want != len(hdr) {
		t.Fatalf("sequences header at %d is %#x, not %d bytes", at, out[at], len(hdr))
	}
	copy(out[at:], hdr)
	return out
}

// bomb is a frame without a content size of n (at least 3) blocks that
// each decode to 128 KiB, as the zstd tool writes them for data that
// repeats every 128 KiB: after the first two, each block is the same 12
// bytes, one match of the block before.
func bomb(t testing.TB, n int) []byte {
	t.Helper()
	file := zstdPipe(t, bytes.Repeat(bombBlock(), 5), "-1", "--no-check")
	h, err := parseFrameHeader(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]byte
	for p := int(h.size); p < len(file); {
		v := int(le(file[p : p+3]))
		size := v >> 3
		if v>>1&3 == 1 {
			size = 1
		}
		blocks = append(blocks, file[p:p+3+size])
		p += 3 + size
	}
	if len(blocks) != 5 || !bytes.Equal(blocks[2], blocks[3]) || blocks[2][0]>>1&3 != 2 || len(blocks[2]) != 12 {
		t.Fatalf("zstd wrote %d blocks, not 5 whose third and fourth are the same compressed block of 12 bytes: % x", len(blocks), blocks[1:])
	}
	out := imagetest.Cat(file[:h.size], blocks[0], blocks[1])
	for i := 0; i < n-3; i++ {
		out = append(out, blocks[2]...)
	}
	return append(out, blocks[4]...)
}

// bombBlock is what each block of a bomb decodes to.
func bombBlock() []byte {
	rng := rand.New(rand.NewPCG(44, 1))
	b := make([]byte, 128<<10)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestCountBomb counts a bomb of compressed blocks: the count reads the
// file once and holds only the counter (no decoder, which would allocate
// its window and block buffers).
func TestCountBomb(t *testing.T) {
	const n = 1 << 16 // 8 GiB from 768 KiB
	file := bomb(t, 7)
	if got := zstdPipe(t, file, "-d"); len(got) != 7*128<<10 {
		t.Fatalf("the 7-block bomb decodes to %d bytes, not 896 KiB", len(got))
	}
	file = bomb(t, n)
	r := &countingReader{r: bytes.NewReader(file)}
	var got int64
	var err error
	start := time.Now()
	alloc := imagetest.Allocated(func() {
		got, err = newCounter(r, 8<<20).frame(Frame{CSize: int64(len(file))}, 1<<40)
	})
	t.Logf("counted %d bytes from %d in %v, reading %d bytes, allocating %d", got, len(file), time.Since(start), r.n, alloc)
	if err != nil || got != n*128<<10 {
		t.Errorf("count = %d, %v; want %d", got, err, n*128<<10)
	}
	if r.n > int64(len(file)) {
		t.Errorf("read %d bytes of the %d-byte file", r.n, len(file))
	}
	if limit := imagetest.AllocBound(256 << 10); alloc > limit {
		t.Errorf("allocated %d bytes, more than %d", alloc, limit)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReaderAt
	n int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

// BenchmarkBomb counts a bomb of 4 MiB of compressed blocks (42 GiB), and
// decodes it into nothing as Open did before the count (go test -run
// NONE -bench Bomb -benchtime 1x).
func BenchmarkBomb(b *testing.B) {
	file := bomb(b, 350000)
	b.Logf("%d bytes of compressed blocks, %d GiB uncompressed", len(file), 350000*128<<10>>30)
	b.Run("count", func(b *testing.B) {
		for range b.N {
			if _, err := newCounter(bytes.NewReader(file), 8<<20).frame(Frame{CSize: int64(len(file))}, 1<<40); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		for range b.N {
			d, err := kzstd.NewReader(bytes.NewReader(file), kzstd.WithDecoderConcurrency(1), kzstd.WithDecoderLowmem(true))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, d); err != nil {
				b.Fatal(err)
			}
			d.Close()
		}
	})
}
