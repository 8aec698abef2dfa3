package zstd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
// Offset.
type CorruptError struct {
	Offset int64
	What   string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt zstd data at byte %d: %s", e.Offset, e.What)
}

func corrupt(off int64, format string, args ...any) error {
	return &CorruptError{Offset: off, What: fmt.Sprintf(format, args...)}
}

// Frame is one zstd frame of the file.
type Frame struct {
	COff   int64 // file offset
	CSize  int64 // compressed size, header to checksum
	UOff   int64 // uncompressed offset
	USize  int64 // uncompressed size, or -1 while unknown
	Window int64 // window size from the header (0 if not yet read)
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
// block headers (no decoding), and returns its header.
func walkFrame(r io.ReaderAt, off, size int64) (frameHeader, int64, error) {
	var hb [18]byte
	n, err := r.ReadAt(hb[:min(int64(len(hb)), size-off)], off)
	if err != nil && !(err == io.EOF && n > 0) {
		return frameHeader{}, 0, err
	}
	h, err := parseFrameHeader(hb[:n])
	if err != nil {
		return h, 0, &CorruptError{Offset: off, What: err.Error()}
	}
	pos := off + h.size
	var bh [3]byte
	for {
		if pos+3 > size {
			return h, 0, corrupt(pos, "the file ends inside a frame (truncated?)")
		}
		if _, err := r.ReadAt(bh[:], pos); err != nil {
			return h, 0, err
		}
		v := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
		last, typ, bsize := v&1 != 0, (v>>1)&3, int64(v>>3)
		pos += 3
		switch typ {
		case 0, 2: // raw, compressed
			if bsize > 128<<10 {
				return h, 0, corrupt(pos-3, "block of %d bytes is larger than 128 KiB", bsize)
			}
			pos += bsize
		case 1: // RLE
			pos++
		default:
			return h, 0, corrupt(pos-3, "reserved block type")
		}
		if last {
			break
		}
	}
	if h.checksum {
		pos += 4
	}
	if pos > size {
		return h, 0, corrupt(size, "the file ends inside a frame (truncated?)")
	}
	return h, pos - off, nil
}

// seekTable reads the seekable format's seek table, if the file ends with
// one; ok is false if it does not.
func seekTable(r io.ReaderAt, size int64) (frames []Frame, ok bool, err error) {
	if size < seekFooterLen+8 {
		return nil, false, nil
	}
	var ft [seekFooterLen]byte
	if _, err := r.ReadAt(ft[:], size-seekFooterLen); err != nil {
		return nil, false, err
	}
	if binary.LittleEndian.Uint32(ft[5:]) != seekableMagic {
		return nil, false, nil
	}
	n := int64(binary.LittleEndian.Uint32(ft[0:]))
	desc := ft[4]
	if desc&0x7C != 0 {
		return nil, false, corrupt(size-5, "reserved seek table descriptor bits are set")
	}
	entry := int64(8)
	if desc&0x80 != 0 {
		entry = 12
	}
	if n > maxFrames {
		return nil, false, fmt.Errorf("seek table lists %d frames, more than %d (repack with larger frames: nbdloop pack --block-size)", n, maxFrames)
	}
	tsize := n*entry + seekFooterLen
	tpos := size - tsize - 8
	if tpos < 0 {
		return nil, false, corrupt(size-seekFooterLen, "seek table of %d frames does not fit in the file", n)
	}
	var sh [8]byte
	if _, err := r.ReadAt(sh[:], tpos); err != nil {
		return nil, false, err
	}
	if binary.LittleEndian.Uint32(sh[:]) != seekTableMagic || int64(binary.LittleEndian.Uint32(sh[4:])) != tsize {
		return nil, false, corrupt(tpos, "no seek table frame where the footer says")
	}
	tab := make([]byte, n*entry)
	if _, err := r.ReadAt(tab, tpos+8); err != nil {
		return nil, false, err
	}
	var coff, uoff int64
	for i := int64(0); i < n; i++ {
		e := tab[i*entry:]
		cs, us := int64(binary.LittleEndian.Uint32(e)), int64(binary.LittleEndian.Uint32(e[4:]))
		if cs == 0 {
			return nil, false, corrupt(tpos+8+i*entry, "seek table entry %d has no compressed bytes", i)
		}
		frames = append(frames, Frame{COff: coff, CSize: cs, UOff: uoff, USize: us})
		coff += cs
		uoff += us
	}
	if coff != tpos {
		return nil, false, corrupt(tpos, "the seek table's frames add up to %d bytes, but it starts at %d", coff, tpos)
	}
	return frames, true, nil
}

// walkFrames lists the frames of a file that has no seek table, walking
// frame and block headers from the start; skippable frames are passed
// over. Frames without a content size get USize -1.
func walkFrames(r io.ReaderAt, size int64) ([]Frame, error) {
	var frames []Frame
	var off int64
	var m [8]byte
	for off < size {
		if size-off < 8 {
			return nil, corrupt(off, "%d bytes after the last frame are not a frame", size-off)
		}
		if _, err := r.ReadAt(m[:], off); err != nil {
			return nil, err
		}
		magic := binary.LittleEndian.Uint32(m[:])
		if magic >= skipMagicMin && magic <= skipMagicMax {
			off += 8 + int64(binary.LittleEndian.Uint32(m[4:]))
			continue
		}
		if magic != frameMagic {
			if off == 0 {
				return nil, ErrNotZstd
			}
			return nil, corrupt(off, "no zstd frame magic after the previous frame")
		}
		h, csize, err := walkFrame(r, off, size)
		if err != nil {
			return nil, err
		}
		if h.dictID != 0 {
			return nil, fmt.Errorf("zstd frame at byte %d needs dictionary %d: dictionaries are not supported (recompress without --dict)", off, h.dictID)
		}
		if len(frames) >= maxFrames {
			return nil, fmt.Errorf("more than %d zstd frames (repack with larger frames: nbdloop pack --block-size)", maxFrames)
		}
		frames = append(frames, Frame{COff: off, CSize: csize, USize: h.fcs, Window: h.window})
		off += csize
	}
	if off > size {
		return nil, corrupt(size, "a skippable frame runs past the end of the file (truncated?)")
	}
	if len(frames) == 0 {
		return nil, ErrNotZstd
	}
	return frames, nil
}
