package xz

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Sizes and magic of the .xz container [xz-file-format.txt].
const (
	headerLen  = 12
	footerLen  = 12
	maxBlocks  = 1 << 24 // 640 MiB of index in memory; refuse more
	maxVarint  = 9
	filterLZMA = 0x21
)

var (
	headerMagic = []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}
	footerMagic = []byte{'Y', 'Z'}
)

// Check IDs.
const (
	CheckNone   = 0x00
	CheckCRC32  = 0x01
	CheckCRC64  = 0x04
	CheckSHA256 = 0x0A
)

// checkSize is the size of a check by ID, fixed by range for the reserved
// IDs as well.
func checkSize(id byte) int64 {
	switch {
	case id == 0:
		return 0
	case id <= 3:
		return 4
	case id <= 6:
		return 8
	case id <= 9:
		return 16
	case id <= 12:
		return 32
	default:
		return 64
	}
}

// CheckName is the name xz --list uses for a check ID.
func CheckName(id byte) string {
	switch id {
	case CheckNone:
		return "None"
	case CheckCRC32:
		return "CRC32"
	case CheckCRC64:
		return "CRC64"
	case CheckSHA256:
		return "SHA-256"
	}
	return fmt.Sprintf("Unknown-%d", id)
}

// Block is one block of an .xz file, as its stream's index records it.
type Block struct {
	UOff     int64 // uncompressed offset in the whole file
	USize    int64 // uncompressed size
	COff     int64 // file offset of the block header
	Unpadded int64 // header + compressed data + check, without block padding
	Check    byte  // the stream's check ID
}

// Index is what ReadIndex finds: every non-empty block of every stream, in
// order.
type Index struct {
	Blocks  []Block
	Streams int
	Size    int64 // uncompressed size
	Padding int64 // stream padding bytes
	Checks  []byte
}

// CorruptError reports an .xz file that breaks the format at file offset
// Offset.
type CorruptError struct {
	Offset int64
	What   string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt xz data at byte %d: %s", e.Offset, e.What)
}

func corrupt(off int64, format string, args ...any) error {
	return &CorruptError{Offset: off, What: fmt.Sprintf(format, args...)}
}

// ErrNotXZ is returned when the data does not start like an .xz file.
var ErrNotXZ = errors.New("not an xz file")

// ReadIndex reads the stream footers, indexes and headers of the .xz file
// r of size bytes, walking from its end, the way xz --list does: several
// streams, stream padding, every check type. It reads the blocks' data not
// at all, and the index of each stream once.
func ReadIndex(r io.ReaderAt, size int64) (*Index, error) {
	if size < headerLen+footerLen+8 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrNotXZ, size)
	}
	var head [6]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, err
	}
	if !bytes.Equal(head[:], headerMagic) {
		return nil, fmt.Errorf("%w: no xz magic at the start", ErrNotXZ)
	}
	if size%4 != 0 {
		return nil, fmt.Errorf("%w: size %d is not a multiple of 4 bytes (truncated? check it with xz -t)", ErrNotXZ, size)
	}
	ix := &Index{}
	var streams [][]Block // last stream first
	pos := size
	nblocks := 0
	for pos > 0 {
		// Stream padding: NUL bytes in multiples of 4.
		pad, err := zerosBefore(r, pos)
		if err != nil {
			return nil, err
		}
		pos -= pad
		ix.Padding += pad
		if pos == 0 {
			return nil, corrupt(0, "only stream padding")
		}
		if pos < headerLen+footerLen+8 {
			return nil, corrupt(pos, "too short for a stream (truncated?)")
		}
		blocks, start, check, err := readStream(r, pos, maxBlocks-nblocks)
		if err != nil {
			return nil, err
		}
		nblocks += len(blocks)
		streams = append(streams, blocks)
		ix.Checks = append(ix.Checks, check)
		pos = start
	}
	ix.Streams = len(streams)
	var uoff int64
	for s := len(streams) - 1; s >= 0; s-- {
		for _, b := range streams[s] {
			if b.USize == 0 {
				continue
			}
			if uoff > 1<<62-b.USize {
				return nil, corrupt(b.COff, "uncompressed size overflows")
			}
			b.UOff = uoff
			uoff += b.USize
			ix.Blocks = append(ix.Blocks, b)
		}
	}
	ix.Size = uoff
	return ix, nil
}

// zerosBefore counts the NUL bytes (a multiple of 4) right before end.
func zerosBefore(r io.ReaderAt, end int64) (int64, error) {
	buf := make([]byte, 64<<10)
	var n int64
	for end-n > 0 {
		k := min(int64(len(buf)), end-n)
		b := buf[:k]
		if _, err := r.ReadAt(b, end-n-k); err != nil {
			return 0, err
		}
		i := len(b)
		for i > 0 && b[i-1] == 0 {
			i--
		}
		n += int64(len(b) - i)
		if i > 0 {
			break
		}
	}
	return n &^ 3, nil // a partial word of zeros belongs to the footer
}

// readStream reads the stream that ends at end and returns its blocks
// (offsets filled in, UOff not yet), where the stream starts and its check.
func readStream(r io.ReaderAt, end int64, blockLimit int) ([]Block, int64, byte, error) {
	var ft [footerLen]byte
	fpos := end - footerLen
	if _, err := r.ReadAt(ft[:], fpos); err != nil {
		return nil, 0, 0, err
	}
	flags, backward, err := parseFooter(ft[:])
	if err != nil {
		return nil, 0, 0, &CorruptError{Offset: fpos, What: err.Error()}
	}
	idxSize := (int64(backward) + 1) * 4
	idxPos := fpos - idxSize
	if idxPos < headerLen {
		return nil, 0, 0, corrupt(fpos, "index size %d does not fit in the file", idxSize)
	}
	blocks, dataSize, err := parseIndex(bufio.NewReaderSize(io.NewSectionReader(r, idxPos, idxSize), 64<<10), idxSize, blockLimit)
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Offset += idxPos
		}
		return nil, 0, 0, err
	}
	start := idxPos - dataSize - headerLen
	if dataSize > idxPos || start < 0 {
		return nil, 0, 0, corrupt(idxPos, "the index's blocks (%d bytes) do not fit before it", dataSize)
	}
	var hd [headerLen]byte
	if _, err := r.ReadAt(hd[:], start); err != nil {
		return nil, 0, 0, err
	}
	hflags, err := parseHeader(hd[:])
	if err != nil {
		return nil, 0, 0, &CorruptError{Offset: start, What: err.Error()}
	}
	if hflags != flags {
		return nil, 0, 0, corrupt(fpos, "stream footer flags %#04x differ from the header's %#04x", flags, hflags)
	}
	check := byte(flags & 0x0F)
	coff := start + headerLen
	for i := range blocks {
		blocks[i].COff = coff
		blocks[i].Check = check
		if blocks[i].Unpadded <= checkSize(check)+8 {
			return nil, 0, 0, corrupt(idxPos, "index record %d: unpadded size %d is too small for a block with a %s check", i, blocks[i].Unpadded, CheckName(check))
		}
		coff += roundup4(blocks[i].Unpadded)
	}
	return blocks, start, check, nil
}

func roundup4(n int64) int64 { return (n + 3) &^ 3 }

// parseHeader checks a stream header and returns its flags.
func parseHeader(b []byte) (uint16, error) {
	if !bytes.Equal(b[:6], headerMagic) {
		return 0, errors.New("no stream header magic")
	}
	if crc32.ChecksumIEEE(b[6:8]) != binary.LittleEndian.Uint32(b[8:12]) {
		return 0, errors.New("stream header CRC32 mismatch")
	}
	flags := binary.BigEndian.Uint16(b[6:8])
	if flags&0xFFF0 != 0 {
		return 0, fmt.Errorf("unsupported stream flags %#04x (a newer xz format?)", flags)
	}
	return flags, nil
}

// parseFooter checks a stream footer and returns its flags and Backward
// Size field.
func parseFooter(b []byte) (uint16, uint32, error) {
	if !bytes.Equal(b[10:12], footerMagic) {
		return 0, 0, errors.New("no stream footer magic (truncated, or not an xz file?)")
	}
	if crc32.ChecksumIEEE(b[4:10]) != binary.LittleEndian.Uint32(b[0:4]) {
		return 0, 0, errors.New("stream footer CRC32 mismatch")
	}
	flags := binary.BigEndian.Uint16(b[8:10])
	if flags&0xFFF0 != 0 {
		return 0, 0, fmt.Errorf("unsupported stream flags %#04x (a newer xz format?)", flags)
	}
	return flags, binary.LittleEndian.Uint32(b[4:8]), nil
}

// crcReader hashes and counts what is read through it.
type crcReader struct {
	r   io.ByteReader
	crc uint32
	n   int64
	one [1]byte
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	c.one[0] = b
	c.crc = crc32.Update(c.crc, crc32.IEEETable, c.one[:])
	c.n++
	return b, nil
}

// parseIndex parses an index of size bytes: records, padding, CRC32. It
// returns the blocks with Unpadded and USize set and the blocks' total size
// on disk. Offsets in errors are relative to the index.
func parseIndex(br io.ByteReader, size int64, blockLimit int) ([]Block, int64, error) {
	c := &crcReader{r: br}
	ind, err := c.ReadByte()
	if err != nil {
		return nil, 0, err
	}
	if ind != 0 {
		return nil, 0, corrupt(0, "index indicator is %#02x, not 0", ind)
	}
	count, err := readVarint(c)
	if err != nil {
		return nil, 0, corrupt(c.n, "index record count: %v", err)
	}
	// Each record takes at least 2 bytes: an unchecked count cannot
	// make us allocate or loop beyond the index's size.
	if count > uint64(size/2) {
		return nil, 0, corrupt(1, "index claims %d records in %d bytes", count, size)
	}
	if count > uint64(blockLimit) {
		return nil, 0, fmt.Errorf("xz file has more than %d blocks (recompress with larger blocks: nbdloop pack --block-size)", maxBlocks)
	}
	blocks := make([]Block, 0, count)
	var total int64
	for i := uint64(0); i < count; i++ {
		at := c.n
		unpadded, err := readVarint(c)
		if err != nil {
			return nil, 0, corrupt(at, "index record %d: %v", i, err)
		}
		usize, err := readVarint(c)
		if err != nil {
			return nil, 0, corrupt(at, "index record %d: %v", i, err)
		}
		if unpadded == 0 || unpadded > 1<<62 || usize > 1<<62 {
			return nil, 0, corrupt(at, "index record %d: sizes %d, %d are out of range", i, unpadded, usize)
		}
		total += roundup4(int64(unpadded))
		if total > 1<<62 {
			return nil, 0, corrupt(at, "index: block sizes overflow")
		}
		blocks = append(blocks, Block{Unpadded: int64(unpadded), USize: int64(usize)})
	}
	for c.n%4 != 0 {
		b, err := c.ReadByte()
		if err != nil {
			return nil, 0, err
		}
		if b != 0 {
			return nil, 0, corrupt(c.n-1, "index padding is not zero")
		}
	}
	want := c.crc
	var crc [4]byte
	for i := range crc {
		if crc[i], err = br.ReadByte(); err != nil {
			return nil, 0, corrupt(c.n, "index ends early")
		}
	}
	if c.n+4 != size {
		return nil, 0, corrupt(c.n, "index is %d bytes, but the footer says %d", c.n+4, size)
	}
	if binary.LittleEndian.Uint32(crc[:]) != want {
		return nil, 0, corrupt(c.n, "index CRC32 mismatch")
	}
	return blocks, total, nil
}

// readVarint reads the xz multibyte integer: 7 bits a byte, low first, at
// most 9 bytes, no superfluous trailing zero byte.
func readVarint(r io.ByteReader) (uint64, error) {
	var x uint64
	for i := 0; i < maxVarint; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		x |= uint64(b&0x7F) << (7 * i)
		if b&0x80 == 0 {
			if b == 0 && i > 0 {
				return 0, errors.New("integer has a superfluous zero byte")
			}
			return x, nil
		}
	}
	return 0, errors.New("integer longer than 9 bytes")
}

// putVarint appends x in xz's multibyte form.
func putVarint(b []byte, x uint64) []byte {
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}
