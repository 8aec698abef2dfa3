package zstd

import (
	"io"
	"sort"

	"github.com/nbdloop/nbdloop/sources"
)

// zeroFrameMax is the largest compressed frame looked at for zeros: a
// block of zeros takes 4 (RLE) to about 13 (compressed) bytes per 128 KiB,
// so 512 bytes hold a frame of several MiB of zeros, and looking costs one
// read of at most that.
const zeroFrameMax = 512

// isZeroFrame reports whether the frame of csize bytes at coff can only
// decode to zeros, from its compressed bytes alone: every block is an RLE
// block of byte 0, a raw block of zero bytes, or a compressed block whose
// literals are zero bytes (raw or RLE literals; Huffman-coded ones are not
// looked into). Every byte such a block makes is a literal or a copy of an
// earlier byte of the frame (frames with a dictionary are refused at
// Open), so all are zeros; this is how zstd and nbdloop pack write runs of
// zeros. A frame it cannot read or parse is not zeros, as far as it knows
// (reading it reports the error).
func isZeroFrame(r io.ReaderAt, coff, csize int64) bool {
	if csize > zeroFrameMax {
		return false
	}
	var b [zeroFrameMax]byte
	n, err := r.ReadAt(b[:csize], coff)
	if int64(n) != csize && err != nil {
		return false
	}
	h, err := parseFrameHeader(b[:n])
	if err != nil {
		return false
	}
	rest := b[h.size:n]
	for {
		if len(rest) < 3 {
			return false
		}
		v := uint32(rest[0]) | uint32(rest[1])<<8 | uint32(rest[2])<<16
		last, typ, bsize := v&1 != 0, (v>>1)&3, int(v>>3)
		rest = rest[3:]
		var body []byte
		switch {
		case typ == 1 && len(rest) >= 1: // RLE: one byte, bsize times
			body, rest = rest[:1], rest[1:]
		case typ != 1 && bsize <= len(rest):
			body, rest = rest[:bsize], rest[bsize:]
		default:
			return false
		}
		switch typ {
		case 0, 1:
			if !allZero(body) {
				return false
			}
		case 2:
			if !zeroLiterals(body) {
				return false
			}
		default:
			return false
		}
		if last {
			return true
		}
	}
}

// zeroLiterals reports whether the literals section at the start of
// compressed block b [RFC 8878 3.1.1.3.1] is raw or RLE literals of byte 0
// only.
func zeroLiterals(b []byte) bool {
	if len(b) < 1 {
		return false
	}
	lt, sf := b[0]&3, (b[0]>>2)&3
	if lt > 1 { // Compressed_Literals_Block, Treeless_Literals_Block
		return false
	}
	var hsize, size int
	switch sf {
	case 0, 2:
		hsize, size = 1, int(b[0]>>3)
	case 1:
		if len(b) < 2 {
			return false
		}
		hsize, size = 2, int(b[0]>>4)|int(b[1])<<4
	case 3:
		if len(b) < 3 {
			return false
		}
		hsize, size = 3, int(b[0]>>4)|int(b[1])<<4|int(b[2])<<12
	}
	if lt == 1 { // RLE_Literals_Block: one byte, size times
		size = 1
	}
	return hsize+size <= len(b) && allZero(b[hsize:hsize+size])
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Extents reports the frames that can only decode to zeros (isZeroFrame;
// looked at once, at Open) as holes, and the rest as data: what the file
// says without decoding. Zeros inside a frame that also holds data are
// data, as are those of a frame of more than 512 compressed bytes.
func (s *Source) Extents(off, length int64, fn func(sources.Extent) bool) error {
	if err := sources.CheckRange(off, length, s.size); err != nil {
		return err
	}
	end := off + length
	i := sort.Search(len(s.frames), func(i int) bool { return s.frames[i].uoff > off }) - 1
	for ; off < end; i++ {
		next := min(end, s.frames[i].uoff+s.usize(i))
		kind := sources.ExtentData
		if s.frames[i].zero {
			kind = sources.ExtentHole
		}
		if !fn(sources.Extent{Off: off, Length: next - off, Kind: kind}) {
			return nil
		}
		off = next
	}
	return nil
}
