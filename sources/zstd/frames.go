package zstd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/nbdloop/nbdloop/sources/internal/compressed"
)

// Magic numbers [zstd_compression_format.md, zstd_seekable_compression_format.md].
const (
	frameMagic     = 0xFD2FB528
	skipMagicMin   = 0x184D2A50
	skipMagicMax   = 0x184D2A5F
	seekTableMagic = 0x184D2A5E // the skippable frame holding the seek table
	seekableMagic  = 0x8F92EAB1 // the last 4 bytes of a seekable file
	seekFooterLen  = 9
	maxFrames      = 1 << 24
)

// ErrNotZstd is returned when the data does not start with a zstd frame.
var ErrNotZstd = errors.New("not a zstd file")

// CorruptError reports zstd data that breaks the format at file offset
// Offset. It is compressed.CorruptError, the one such error of every
// compressed format (Format "zstd"); it matches ErrCorrupt.
type CorruptError = compressed.CorruptError

// ErrCorrupt is matched (errors.Is) by every *CorruptError.
var ErrCorrupt = compressed.ErrCorrupt

// corrupt returns the *CorruptError at file offset off; an error given
// with %w is kept as its Err.
func corrupt(off int64, format string, args ...any) error {
	return compressed.Corrupt("zstd", off, format, args...)
}

// Frame is one zstd frame of the file.
type Frame struct {
	COff  int64 // file offset
	CSize int64 // compressed size, header to checksum
	UOff  int64 // uncompressed offset
	USize int64 // uncompressed size, or -1 while unknown
	// Bound is the most a frame of unknown size can hold, from its block
	// headers: their sizes for raw and RLE blocks, min(window, 128 KiB)
	// for compressed ones. 0 when USize is known.
	Bound int64
}

// maxBlock is the largest a block can decode to (Block_Maximum_Size).
const maxBlock = 128 << 10

// blockMaximum is the Block_Maximum_Size of a frame of window window:
// min(window, 128 KiB), the window of a single-segment frame (its content
// size) taken as at least 1 KiB, as the decoder takes it.
func blockMaximum(window int64) int64 {
	return min(max(window, 1<<10), maxBlock)
}

// frameHeader is what a frame header says.
type frameHeader struct {
	size     int64 // header bytes, magic included
	fcs      int64 // frame content size, or -1
	window   int64
	checksum bool
	dictID   uint32
}

// parseFrameHeader parses the header at the start of b (b holds at least
// the header's bytes, at most 18 needed).
func parseFrameHeader(b []byte) (frameHeader, error) {
	h := frameHeader{fcs: -1}
	if len(b) < 6 || binary.LittleEndian.Uint32(b) != frameMagic {
		return h, errors.New("no zstd frame magic")
	}
	fhd := b[4]
	if fhd&0x08 != 0 {
		return h, errors.New("reserved frame header bit is set")
	}
	single := fhd&0x20 != 0
	h.checksum = fhd&0x04 != 0
	p := 5
	if !single {
		wd := b[p]
		p++
		exp, mant := int64(wd>>3), int64(wd&7)
		base := int64(1) << (10 + exp)
		h.window = base + base/8*mant
	}
	didLen := []int{0, 1, 2, 4}[fhd&3]
	fcsLen := []int{0, 2, 4, 8}[fhd>>6]
	if single && fcsLen == 0 {
		fcsLen = 1
	}
	if len(b) < p+didLen+fcsLen {
		return h, errors.New("truncated frame header")
	}
	switch didLen {
	case 1:
		h.dictID = uint32(b[p])
	case 2:
		h.dictID = uint32(binary.LittleEndian.Uint16(b[p:]))
	case 4:
		h.dictID = binary.LittleEndian.Uint32(b[p:])
	}
	p += didLen
	switch fcsLen {
	case 1:
		h.fcs = int64(b[p])
	case 2:
		h.fcs = int64(binary.LittleEndian.Uint16(b[p:])) + 256
	case 4:
		h.fcs = int64(binary.LittleEndian.Uint32(b[p:]))
	case 8:
		v := binary.LittleEndian.Uint64(b[p:])
		if v > 1<<62 {
			return h, errors.New("frame content size out of range")
		}
		h.fcs = int64(v)
	}
	p += fcsLen
	if single {
		h.window = h.fcs
	}
	h.size = int64(p)
	return h, nil
}

// walkFrame finds the compressed size of the frame at off by walking its
// block headers (no decoding), and returns its header, that size, the bytes
// its raw and RLE blocks decode to and the number of its compressed blocks.
func walkFrame(r io.ReaderAt, off, size int64) (h frameHeader, csize, known, ncomp int64, err error) {
	var hb [18]byte
	n, err := r.ReadAt(hb[:min(int64(len(hb)), size-off)], off)
	if err != nil && !(err == io.EOF && n > 0) {
		return h, 0, 0, 0, err
	}
	h, err = parseFrameHeader(hb[:n])
	if err != nil {
		return h, 0, 0, 0, corrupt(off, "%w", err)
	}
	pos := off + h.size
	var bh [3]byte
	for {
		if pos+3 > size {
			return h, 0, 0, 0, corrupt(pos, "the file ends inside a frame (truncated?)")
		}
		if _, err := r.ReadAt(bh[:], pos); err != nil {
			return h, 0, 0, 0, err
		}
		v := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
		last, typ, bsize := v&1 != 0, (v>>1)&3, int64(v>>3)
		if bsize > maxBlock {
			return h, 0, 0, 0, corrupt(pos, "block of %d bytes is larger than 128 KiB", bsize)
		}
		if bsize > blockMaximum(h.window) {
			return h, 0, 0, 0, corrupt(pos, "block of %d bytes is larger than the block maximum of %d", bsize, blockMaximum(h.window))
		}
		pos += 3
		switch typ {
		case 0: // raw
			pos += bsize
			known += bsize
		case 1: // RLE: one byte, bsize times
			pos++
			known += bsize
		case 2: // compressed
			pos += bsize
			ncomp++
		default:
			return h, 0, 0, 0, corrupt(pos-3, "reserved block type")
		}
		if last {
			break
		}
	}
	if h.checksum {
		pos += 4
	}
	if pos > size {
		return h, 0, 0, 0, corrupt(size, "the file ends inside a frame (truncated?)")
	}
	return h, pos - off, known, ncomp, nil
}

// FrameBytes is the memory a Source keeps per frame, charged to the
// Budget.
const FrameBytes = 32

// seekTable reads the seekable format's seek table, if the file ends with
// one, passing each frame to emit in order (UOff not set); ok is false if
// the file has no seek table. It calls reserve with the number of frames
// before the first emit, once that number is checked against the file's
// size: it may size a table then.
func seekTable(r io.ReaderAt, size int64, reserve func(n int) error, emit func(Frame) error) (ok bool, err error) {
	if size < seekFooterLen+8 {
		return false, nil
	}
	var ft [seekFooterLen]byte
	if _, err := r.ReadAt(ft[:], size-seekFooterLen); err != nil {
		return false, err
	}
	if binary.LittleEndian.Uint32(ft[5:]) != seekableMagic {
		return false, nil
	}
	n := int64(binary.LittleEndian.Uint32(ft[0:]))
	desc := ft[4]
	if desc&0x7C != 0 {
		return false, corrupt(size-5, "reserved seek table descriptor bits are set")
	}
	entry := int64(8)
	if desc&0x80 != 0 {
		entry = 12
	}
	tsize := n*entry + seekFooterLen
	tpos := size - tsize - 8
	if tpos < 0 {
		return false, corrupt(size-seekFooterLen, "seek table of %d frames does not fit in the file", n)
	}
	if n > maxFrames {
		return false, fmt.Errorf("seek table lists %d frames, more than %d (repack with larger frames: nbdloop pack --block-size)", n, maxFrames)
	}
	var sh [8]byte
	if _, err := r.ReadAt(sh[:], tpos); err != nil {
		return false, err
	}
	if binary.LittleEndian.Uint32(sh[:]) != seekTableMagic || int64(binary.LittleEndian.Uint32(sh[4:])) != tsize {
		return false, corrupt(tpos, "no seek table frame where the footer says")
	}
	if err := reserve(int(n)); err != nil {
		return false, err
	}
	br := bufio.NewReaderSize(io.NewSectionReader(r, tpos+8, n*entry), int(min(64<<10, max(n*entry, 16))))
	e := make([]byte, entry)
	var coff int64
	for i := int64(0); i < n; i++ {
		if _, err := io.ReadFull(br, e); err != nil {
			return false, err
		}
		cs, us := int64(binary.LittleEndian.Uint32(e)), int64(binary.LittleEndian.Uint32(e[4:]))
		if cs == 0 {
			return false, corrupt(tpos+8+i*entry, "seek table entry %d has no compressed bytes", i)
		}
		if coff+cs > tpos {
			return false, corrupt(tpos, "the seek table's frames add up to more than the %d bytes before it", tpos)
		}
		if err := emit(Frame{COff: coff, CSize: cs, USize: us}); err != nil {
			return false, err
		}
		coff += cs
	}
	if coff != tpos {
		return false, corrupt(tpos, "the seek table's frames add up to %d bytes, but it starts at %d", coff, tpos)
	}
	return true, nil
}

// walkFrames lists the frames of a file that has no seek table, walking
// frame and block headers from the start, passing each frame to emit in
// order (UOff not set); skippable frames are passed over. A frame without
// a content size whose blocks are all raw or RLE gets the size they add up
// to; one with compressed blocks gets USize -1 and its Bound. A content
// size that its blocks cannot hold is refused.
func walkFrames(r io.ReaderAt, size int64, emit func(Frame) error) error {
	var off int64
	var m [8]byte
	frames := 0
	for off < size {
		if size-off < 8 {
			return corrupt(off, "%d bytes after the last frame are not a frame", size-off)
		}
		if _, err := r.ReadAt(m[:], off); err != nil {
			return err
		}
		magic := binary.LittleEndian.Uint32(m[:])
		if magic >= skipMagicMin && magic <= skipMagicMax {
			off += 8 + int64(binary.LittleEndian.Uint32(m[4:]))
			continue
		}
		if magic != frameMagic {
			if off == 0 {
				return ErrNotZstd
			}
			return corrupt(off, "no zstd frame magic after the previous frame")
		}
		h, csize, known, ncomp, err := walkFrame(r, off, size)
		if err != nil {
			return err
		}
		if h.dictID != 0 {
			return fmt.Errorf("zstd frame at byte %d needs dictionary %d: dictionaries are not supported (recompress without --dict)", off, h.dictID)
		}
		if frames >= maxFrames {
			return fmt.Errorf("more than %d zstd frames (repack with larger frames: nbdloop pack --block-size)", maxFrames)
		}
		bound := known + ncomp*blockMaximum(h.window)
		f := Frame{COff: off, CSize: csize, USize: h.fcs}
		switch {
		case h.fcs >= 0 && (h.fcs > bound || ncomp == 0 && h.fcs != known):
			return corrupt(off, "frame claims %d uncompressed bytes, but its blocks hold %d (at most %d)", h.fcs, known, bound)
		case h.fcs < 0 && ncomp == 0:
			f.USize = known
		case h.fcs < 0:
			f.Bound = bound
		}
		if err := emit(f); err != nil {
			return err
		}
		frames++
		off += csize
	}
	if off > size {
		return corrupt(size, "a skippable frame runs past the end of the file (truncated?)")
	}
	if frames == 0 {
		return ErrNotZstd
	}
	return nil
}
