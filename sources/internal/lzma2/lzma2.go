// Package lzma2 decodes raw LZMA2 data: the chunks inside an xz block whose
// filter is LZMA2 (filter ID 0x21), up to the end marker (control byte
// 0x00), as xz --format=raw --lzma2 writes them. It does not read .xz or
// .lzma files, only their LZMA2 payload; sources/xz parses the container.
//
// It exists for speed: nbdloop serves xz images by decoding whole blocks,
// and github.com/ulikunitz/xz's lzma.Reader2, which sources/xz used
// before, is several times slower. This decoder reads each chunk's
// compressed bytes whole (at most 64 KiB) and range-decodes them from
// memory, keeps the decoder's state in local variables, decodes the bits
// of literals, lengths and distances without branches, and decodes
// straight into its dictionary, from which Read copies. BenchmarkDecode
// compares it with ulikunitz/xz and xz -dc -T1; the figures are in
// docs/performance.md.
//
// Limits: a Reader's dictionary holds dictCap bytes (the dictionary size
// of the stream, or more): a match distance beyond dictCap or beyond what
// was decoded since the last dictionary reset is an error, as are
// properties with lc+lp > 4, an end of payload marker inside a chunk
// (LZMA2 forbids it), a chunk whose range decoder does not end exactly at
// its compressed size, a match that runs past the end of its chunk, and a
// stream that does not start with a dictionary reset or whose first LZMA
// chunk after one does not set properties (as liblzma). Any input gives
// output or an error, never a panic or a loop; a Reader uses dictCap bytes
// (rounded up to 16, at least 4 KiB) and about 100 KiB more, whatever the
// input. It never reads from its io.Reader past the end marker, so the
// caller knows exactly how many compressed bytes the stream used.
package lzma2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrCorrupt is wrapped by the errors for invalid LZMA2 data, truncated
// data included (which also wraps io.ErrUnexpectedEOF). The decoder knows
// chunks, not file offsets: sources/xz reports these errors as a
// compressed.CorruptError at the byte of the block, which keeps them, so
// errors.Is finds both sentinels.
var ErrCorrupt = errors.New("lzma2: corrupt data")

const (
	minBuf     = 4096
	maxChunkIn = 1 << 16 // compressed bytes of an LZMA chunk
)

// Reader decodes one LZMA2 stream. Make one with NewReader, or Reset a
// zero Reader before its first Read (as a pool of them does). It is not
// safe for concurrent use.
type Reader struct {
	r   io.Reader
	err error // sticky; io.EOF after the end marker

	// The dictionary, used circularly; its length is a multiple of 16 so
	// that a position in it gives the low bits of the position in the
	// stream (pb, lp). buf[out:pos] is decoded but not yet returned.
	buf     []byte
	dictCap int
	pos     int
	out     int
	wrapped bool // buf has been filled once since the dictionary reset

	// The chunk being decoded.
	left      int  // uncompressed bytes still to come
	raw       bool // an uncompressed chunk
	needReset bool // the next chunk must reset the dictionary
	needProps bool // the next LZMA chunk must set properties
	chunks    int  // chunks read, for messages

	// LZMA state, kept from chunk to chunk unless a chunk resets it.
	lc, lp, pb uint
	state      uint32
	rep        [4]uint32
	mlen       int // bytes of the current match still to copy
	rng, code  uint32
	ip, inLen  int // next byte and size of in
	hdr        [6]byte

	p  probs
	in [maxChunkIn]byte
}

// NewReader returns a Reader of the LZMA2 stream in r whose dictionary
// holds dictCap bytes (the xz block header's dictionary size; a larger
// one works too).
func NewReader(r io.Reader, dictCap int) (*Reader, error) {
	z := new(Reader)
	if err := z.Reset(r, dictCap); err != nil {
		return nil, err
	}
	return z, nil
}

// Reset makes z decode a new stream from r, as NewReader would, keeping
// its buffers when they are large enough: a Reset of a pooled Reader to
// the same or a smaller dictCap allocates nothing.
func (z *Reader) Reset(r io.Reader, dictCap int) error {
	if dictCap <= 0 {
		return fmt.Errorf("lzma2: dictionary size %d is not positive", dictCap)
	}
	n := (max(dictCap, minBuf) + 15) &^ 15
	if cap(z.buf) >= n {
		z.buf = z.buf[:n]
	} else {
		z.buf = make([]byte, n)
	}
	z.r = r
	z.err = nil
	z.dictCap = min(dictCap, 1<<32-1)
	z.pos, z.out, z.wrapped = 0, 0, false
	z.left, z.raw, z.chunks = 0, false, 0
	z.needReset, z.needProps = true, true
	z.mlen = 0
	return nil
}

// Read reads decoded bytes into p. It returns io.EOF once the end marker
// has been read and all bytes before it returned, and reads nothing from
// the input past the end marker. Errors are sticky.
func (z *Reader) Read(p []byte) (int, error) {
	for {
		if z.out < z.pos {
			n := copy(p, z.buf[z.out:z.pos])
			z.out += n
			return n, nil
		}
		if z.err != nil {
			return 0, z.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		if z.pos == len(z.buf) {
			z.pos, z.out, z.wrapped = 0, 0, true
		}
		if z.left == 0 {
			z.err = z.chunk()
			continue
		}
		limit := min(len(z.buf), z.pos+z.left)
		start := z.pos
		if z.raw {
			n, err := io.ReadFull(z.r, z.buf[z.pos:limit])
			z.pos += n
			z.left -= n
			if err != nil {
				z.err = z.inputErr(err)
			}
		} else {
			z.err = z.decode(limit)
			z.left -= z.pos - start
			if z.err == nil && z.left == 0 {
				z.err = z.endChunk()
			}
			if z.err != nil {
				z.pos = start // give out nothing decoded from bad input
			}
		}
		z.out = start
	}
}

// inputErr is the error for err from reading the input.
func (z *Reader) inputErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: input ends inside chunk %d (%w)", ErrCorrupt, z.chunks, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("lzma2: reading chunk %d: %w", z.chunks, err)
}

func (z *Reader) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: chunk %d: %s", ErrCorrupt, z.chunks, fmt.Sprintf(format, args...))
}

// chunk reads the next chunk header (all of z's output is returned).
func (z *Reader) chunk() error {
	z.chunks++
	h := z.hdr[:]
	if _, err := io.ReadFull(z.r, h[:1]); err != nil {
		return z.inputErr(err)
	}
	c := h[0]
	if c == 0 {
		return io.EOF
	}
	if c > 2 && c < 0x80 {
		return z.corrupt("invalid control byte %#02x", c)
	}
	if c >= 0xE0 || c == 1 {
		z.needReset = false
		z.needProps = true
		z.pos, z.out, z.wrapped = 0, 0, false
	} else if z.needReset {
		return z.corrupt("the first chunk does not reset the dictionary (control byte %#02x)", c)
	}
	if c < 0x80 {
		if _, err := io.ReadFull(z.r, h[1:3]); err != nil {
			return z.inputErr(err)
		}
		z.raw = true
		z.left = int(binary.BigEndian.Uint16(h[1:3])) + 1
		return nil
	}
	n := 5
	if c >= 0xC0 {
		n = 6
	} else if z.needProps {
		return z.corrupt("LZMA chunk without properties after a dictionary reset (control byte %#02x)", c)
	}
	if _, err := io.ReadFull(z.r, h[1:n]); err != nil {
		return z.inputErr(err)
	}
	z.raw = false
	z.left = (int(c&0x1F)<<16 | int(binary.BigEndian.Uint16(h[1:3]))) + 1
	z.inLen = int(binary.BigEndian.Uint16(h[3:5])) + 1
	if c >= 0xC0 {
		d := uint(h[5])
		if d >= 9*5*5 {
			return z.corrupt("invalid properties byte %#02x", d)
		}
		lc, lp, pb := d%9, d/9%5, d/45
		if lc+lp > 4 {
			return z.corrupt("properties lc=%d lp=%d: lc+lp is more than 4", lc, lp)
		}
		z.lc, z.lp, z.pb = lc, lp, pb
		z.needProps = false
	}
	if c >= 0xA0 {
		z.p.reset()
		z.state = 0
		z.rep = [4]uint32{}
	}
	if z.inLen < 5 {
		return z.corrupt("%d compressed bytes is too few for a range decoder", z.inLen)
	}
	if _, err := io.ReadFull(z.r, z.in[:z.inLen]); err != nil {
		return z.inputErr(err)
	}
	if z.in[0] != 0 {
		return z.corrupt("range decoder data does not start with a zero byte")
	}
	z.rng = 0xFFFFFFFF
	z.code = binary.BigEndian.Uint32(z.in[1:5])
	z.ip = 5
	return nil
}

// endChunk checks that the LZMA chunk just decoded ends where its header
// says.
func (z *Reader) endChunk() error {
	if z.mlen > 0 {
		return z.corrupt("a match runs past the end of the chunk")
	}
	if z.rng < top {
		z.code = z.code<<8 | uint32(z.in[uint16(z.ip)])
		z.ip++
	}
	if z.ip != z.inLen {
		return z.corrupt("the range decoder used %d of the chunk's %d compressed bytes", z.ip, z.inLen)
	}
	if z.code != 0 {
		return z.corrupt("the range decoder does not end cleanly")
	}
	return nil
}
