package xz

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/compressed"
)

// Sizes and magic of the .xz container [xz-file-format.txt].
const (
	headerLen  = 12
	footerLen  = 12
	maxBlocks  = 1 << 24 // 384 MiB of index in memory; refuse more
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

// Block is one block of an .xz file, as its stream's index records it. It
// takes 24 bytes (BlockBytes), charged to the Budget of ReadIndex: an index
// of millions of records is refused rather than held. Its uncompressed size
// is Index.USize.
type Block struct {
	UOff int64  // uncompressed offset in the whole file
	COff int64  // file offset of the block header
	unp  uint64 // the unpadded size (header + compressed data + check), and the check ID above bit 58
}

// BlockBytes is the memory one Block takes, as charged to the Budget.
const BlockBytes = 24

// maxUnpadded bounds a block's size on disk so that the check ID fits
// beside it in Block: 256 PiB.
const maxUnpadded = 1<<58 - 1

// Unpadded is the block's size on disk without its padding: header,
// compressed data and check.
func (b Block) Unpadded() int64 { return int64(b.unp & maxUnpadded) }

// Check is the ID of the block's check (its stream's).
func (b Block) Check() byte { return byte(b.unp >> 58) }

// Index is what ReadIndex finds: every non-empty block of every stream, in
// order.
type Index struct {
	Blocks  []Block
	Streams int
	Size    int64  // uncompressed size
	Padding int64  // stream padding bytes
	Checks  []byte // the check IDs of the streams, each once

	budget  *sources.Budget
	charged int64
}

// USize is the uncompressed size of block i.
func (ix *Index) USize(i int) int64 {
	if i+1 < len(ix.Blocks) {
		return ix.Blocks[i+1].UOff - ix.Blocks[i].UOff
	}
	return ix.Size - ix.Blocks[i].UOff
}

// Release gives the index's memory back to the Budget it was charged to;
// the Index must not be used afterwards.
func (ix *Index) Release() {
	ix.budget.Release(ix.charged)
	ix.charged = 0
	ix.Blocks = nil
}

// CorruptError reports xz data that breaks the format at file offset
// Offset. It is compressed.CorruptError, the one such error of every
// compressed format (Format "xz"); it matches ErrCorrupt.
type CorruptError = compressed.CorruptError

// ErrCorrupt is matched (errors.Is) by every *CorruptError.
var ErrCorrupt = compressed.ErrCorrupt

// corrupt returns the *CorruptError at file offset off; an error given
// with %w is kept as its Err.
func corrupt(off int64, format string, args ...any) error {
	return compressed.Corrupt("xz", off, format, args...)
}

// ErrNotXZ is returned when the data does not start like an .xz file.
var ErrNotXZ = errors.New("not an xz file")

// maxRatio bounds what a block can claim to decode to: an LZMA2 chunk of
// at least 6 bytes yields at most 2 MiB.
func maxUSize(unpadded int64) int64 { return (unpadded/6 + 1) << 21 }

// indexReader holds what the streams' walk shares: buffers reused from one
// stream to the next, and the budget.
type indexReader struct {
	r      io.ReaderAt
	ix     *Index
	what   string
	zeros  []byte
	br     *bufio.Reader
	counts []int // blocks per stream, last stream first
}

// ReadIndex reads the stream footers, indexes and headers of the .xz file
// r of size bytes, walking from its end, the way xz --list does: several
// streams, stream padding, every check type. It reads the blocks' data not
// at all, and the index of each stream once. The index's memory (BlockBytes
// per block, 16 bytes per stream) is charged to budget before it is
// allocated, naming the file as name; a nil budget charges nothing. On
// success the caller owns the charge (Index.Release); on error nothing
// stays charged.
func ReadIndex(r io.ReaderAt, size int64, budget *sources.Budget, name string) (*Index, error) {
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
	if name == "" {
		name = "the xz file"
	}
	ix := &Index{budget: budget}
	w := &indexReader{r: r, ix: ix, what: name, zeros: make([]byte, 4<<10)}
	ix, err := w.read(size)
	if err != nil {
		w.ix.Release()
		return nil, err
	}
	return ix, nil
}

func (w *indexReader) read(size int64) (*Index, error) {
	ix := w.ix
	pos := size
	for pos > 0 {
		// Stream padding: NUL bytes in multiples of 4.
		pad, err := w.zerosBefore(pos)
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
		if len(w.counts) == cap(w.counts) {
			// Hostile files can hold millions of empty streams.
			n := max(16, 2*cap(w.counts))
			if err := w.charge(int64(n-cap(w.counts))*16, "streams"); err != nil {
				return nil, err
			}
			w.counts = append(make([]int, 0, n), w.counts...)
		}
		n, start, check, err := w.readStream(pos)
		if err != nil {
			return nil, err
		}
		w.counts = append(w.counts, n)
		if !bytes.Contains(ix.Checks, []byte{check}) {
			ix.Checks = append(ix.Checks, check)
		}
		pos = start
	}
	ix.Streams = len(w.counts)
	// The blocks went in stream by stream from the last: put the streams
	// in order, keeping each stream's blocks in theirs.
	b := ix.Blocks
	slices.Reverse(b)
	at := 0
	for i := len(w.counts) - 1; i >= 0; i-- {
		slices.Reverse(b[at : at+w.counts[i]])
		at += w.counts[i]
	}
	w.counts = nil
	// UOff held each block's uncompressed size until now.
	var uoff int64
	for i := range b {
		usize := b[i].UOff
		if uoff > 1<<62-usize {
			return nil, corrupt(b[i].COff, "the blocks' uncompressed sizes add up to more than 2^62 bytes")
		}
		b[i].UOff = uoff
		uoff += usize
	}
	ix.Size = uoff
	return ix, nil
}

// charge takes n bytes for the index from the budget.
func (w *indexReader) charge(n int64, what string) error {
	if err := w.ix.budget.Charge(n, fmt.Sprintf("the index of %s (%s)", w.what, what)); err != nil {
		return err
	}
	w.ix.charged += n
	return nil
}

// grow makes room for n more blocks, charging the budget first.
func (w *indexReader) grow(n int) error {
	ix := w.ix
	if cap(ix.Blocks)-len(ix.Blocks) >= n {
		return nil
	}
	if len(ix.Blocks)+n > maxBlocks {
		return fmt.Errorf("xz file has more than %d blocks (recompress with larger blocks: nbdloop pack --block-size)", maxBlocks)
	}
	c := max(len(ix.Blocks)+n, min(2*cap(ix.Blocks), maxBlocks))
	if err := w.charge(int64(c)*BlockBytes, fmt.Sprintf("%d blocks", len(ix.Blocks)+n)); err != nil {
		return err
	}
	nb := make([]Block, len(ix.Blocks), c)
	copy(nb, ix.Blocks)
	ix.budget.Release(int64(cap(ix.Blocks)) * BlockBytes)
	ix.charged -= int64(cap(ix.Blocks)) * BlockBytes
	ix.Blocks = nb
	return nil
}

// zerosBefore counts the NUL bytes (a multiple of 4) right before end.
func (w *indexReader) zerosBefore(end int64) (int64, error) {
	r, buf := w.r, w.zeros
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

// readStream reads the stream that ends at end, appends its non-empty
// blocks to the index (UOff holding their uncompressed size), and returns
// how many, where the stream starts and its check.
func (w *indexReader) readStream(end int64) (int, int64, byte, error) {
	r := w.r
	var ft [footerLen]byte
	fpos := end - footerLen
	if _, err := r.ReadAt(ft[:], fpos); err != nil {
		return 0, 0, 0, err
	}
	flags, backward, err := parseFooter(ft[:])
	if err != nil {
		return 0, 0, 0, corrupt(fpos, "%w", err)
	}
	idxSize := (int64(backward) + 1) * 4
	idxPos := fpos - idxSize
	if idxPos < headerLen {
		return 0, 0, 0, corrupt(fpos, "index size %d does not fit in the file", idxSize)
	}
	sec := io.NewSectionReader(r, idxPos, idxSize)
	if w.br == nil {
		w.br = bufio.NewReaderSize(sec, 64<<10)
	} else {
		w.br.Reset(sec)
	}
	first := len(w.ix.Blocks)
	dataSize, err := w.parseIndex(w.br, idxSize)
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Offset += idxPos
		}
		return 0, 0, 0, err
	}
	start := idxPos - dataSize - headerLen
	if dataSize > idxPos || start < 0 {
		return 0, 0, 0, corrupt(idxPos, "the index's blocks (%d bytes) do not fit before it", dataSize)
	}
	var hd [headerLen]byte
	if _, err := r.ReadAt(hd[:], start); err != nil {
		return 0, 0, 0, err
	}
	hflags, err := parseHeader(hd[:])
	if err != nil {
		return 0, 0, 0, corrupt(start, "%w", err)
	}
	if hflags != flags {
		return 0, 0, 0, corrupt(fpos, "stream footer flags %#04x differ from the header's %#04x", flags, hflags)
	}
	check := byte(flags & 0x0F)
	coff := start + headerLen
	blocks := w.ix.Blocks[first:]
	kept := 0
	for i, b := range blocks {
		b.COff = coff
		b.unp |= uint64(check) << 58
		if b.Unpadded() <= checkSize(check)+8 {
			return 0, 0, 0, corrupt(idxPos, "index record %d: unpadded size %d is too small for a block with a %s check", i, b.Unpadded(), CheckName(check))
		}
		coff += roundup4(b.Unpadded())
		if b.UOff > 0 { // an empty block serves nothing
			blocks[kept] = b
			kept++
		}
	}
	w.ix.Blocks = w.ix.Blocks[:first+kept]
	return kept, start, check, nil
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
// appends the blocks to the index with their unpadded size and, in UOff,
// their uncompressed size, and returns the blocks' total size on disk.
// Offsets in errors are relative to the index.
func (w *indexReader) parseIndex(br io.ByteReader, size int64) (int64, error) {
	c := &crcReader{r: br}
	ind, err := c.ReadByte()
	if err != nil {
		return 0, err
	}
	if ind != 0 {
		return 0, corrupt(0, "index indicator is %#02x, not 0", ind)
	}
	count, err := readVarint(c)
	if err != nil {
		return 0, corrupt(c.n, "index record count: %w", err)
	}
	// Each record takes at least 2 bytes: an unchecked count cannot
	// make us allocate or loop beyond the index's size.
	if count > uint64(size/2) {
		return 0, corrupt(1, "index claims %d records in %d bytes", count, size)
	}
	// Checked against the index's size above: now it may size the table.
	if err := w.grow(int(count)); err != nil {
		return 0, err
	}
	var total int64
	for i := uint64(0); i < count; i++ {
		at := c.n
		unpadded, err := readVarint(c)
		if err != nil {
			return 0, corrupt(at, "index record %d: %w", i, err)
		}
		usize, err := readVarint(c)
		if err != nil {
			return 0, corrupt(at, "index record %d: %w", i, err)
		}
		if unpadded == 0 || unpadded > maxUnpadded || usize > 1<<62 {
			return 0, corrupt(at, "index record %d: sizes %d, %d are out of range", i, unpadded, usize)
		}
		if int64(usize) > maxUSize(int64(unpadded)) {
			return 0, corrupt(at, "index record %d: a block of %d bytes claims %d uncompressed bytes, more than LZMA2 can produce", i, unpadded, usize)
		}
		total += roundup4(int64(unpadded))
		if total > 1<<62 {
			return 0, corrupt(at, "index: block sizes overflow")
		}
		w.ix.Blocks = append(w.ix.Blocks, Block{UOff: int64(usize), unp: unpadded})
	}
	for c.n%4 != 0 {
		b, err := c.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != 0 {
			return 0, corrupt(c.n-1, "index padding is not zero")
		}
	}
	want := c.crc
	var crc [4]byte
	for i := range crc {
		if crc[i], err = br.ReadByte(); err != nil {
			return 0, corrupt(c.n, "index ends early")
		}
	}
	if c.n+4 != size {
		return 0, corrupt(c.n, "index is %d bytes, but the footer says %d", c.n+4, size)
	}
	if binary.LittleEndian.Uint32(crc[:]) != want {
		return 0, corrupt(c.n, "index CRC32 mismatch")
	}
	return total, nil
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
