package xz

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// readStream reads the stream that ends at end, appends its non-empty
// blocks to the index (UOff holding their uncompressed size), and returns
// how many, where the stream starts and its check.
func (w *indexReader) readStream(end int64) (int, int64, byte, error) {
	fpos := end - footerLen
	flags, idxPos, idxSize, err := w.readFooter(fpos)
	if err != nil {
		return 0, 0, 0, err
	}
	first := len(w.ix.Blocks)
	dataSize, err := w.readIndexAt(idxPos, idxSize)
	if err != nil {
		return 0, 0, 0, err
	}
	start := idxPos - dataSize - headerLen
	if dataSize > idxPos || start < 0 {
		return 0, 0, 0, corrupt(idxPos, "the index's blocks (%d bytes) do not fit before it", dataSize)
	}
	if err := w.checkHeader(start, flags, fpos); err != nil {
		return 0, 0, 0, err
	}
	check := byte(flags & 0x0F)
	kept, err := w.placeBlocks(first, start+headerLen, check, idxPos)
	if err != nil {
		return 0, 0, 0, err
	}
	return kept, start, check, nil
}

// readFooter reads the stream footer at fpos and returns the stream's
// flags and where its index lies.
func (w *indexReader) readFooter(fpos int64) (flags uint16, idxPos, idxSize int64, err error) {
	var ft [footerLen]byte
	if _, err := w.r.ReadAt(ft[:], fpos); err != nil {
		return 0, 0, 0, err
	}
	flags, backward, err := parseFooter(ft[:])
	if err != nil {
		return 0, 0, 0, corrupt(fpos, "%w", err)
	}
	idxSize = (int64(backward) + 1) * 4
	idxPos = fpos - idxSize
	if idxPos < headerLen {
		return 0, 0, 0, corrupt(fpos, "index size %d does not fit in the file", idxSize)
	}
	return flags, idxPos, idxSize, nil
}

// readIndexAt parses the index of idxSize bytes at idxPos (see parseIndex),
// with file offsets in its errors.
func (w *indexReader) readIndexAt(idxPos, idxSize int64) (int64, error) {
	sec := io.NewSectionReader(w.r, idxPos, idxSize)
	if w.br == nil {
		w.br = bufio.NewReaderSize(sec, 64<<10)
	} else {
		w.br.Reset(sec)
	}
	dataSize, err := w.parseIndex(w.br, idxSize)
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Offset += idxPos
		}
		return 0, err
	}
	return dataSize, nil
}

// checkHeader reads the stream header at start and checks that its flags
// are the footer's (the footer at fpos, for errors).
func (w *indexReader) checkHeader(start int64, flags uint16, fpos int64) error {
	var hd [headerLen]byte
	if _, err := w.r.ReadAt(hd[:], start); err != nil {
		return err
	}
	hflags, err := parseHeader(hd[:])
	if err != nil {
		return corrupt(start, "%w", err)
	}
	if hflags != flags {
		return corrupt(fpos, "stream footer flags %#04x differ from the header's %#04x", flags, hflags)
	}
	return nil
}

// placeBlocks gives the stream's blocks (those from first on) their file
// offsets, from coff on, and its check; it fails a block too small for its
// header and check (idxPos is the index's offset, for errors), drops the
// empty ones, and returns how many it kept.
func (w *indexReader) placeBlocks(first int, coff int64, check byte, idxPos int64) (int, error) {
	blocks := w.ix.Blocks[first:]
	kept := 0
	for i, b := range blocks {
		b.COff = coff
		b.unp |= uint64(check) << 58
		if b.Unpadded() <= checkSize(check)+8 {
			return 0, corrupt(idxPos, "index record %d: unpadded size %d is too small for a block with a %s check", i, b.Unpadded(), CheckName(check))
		}
		coff += roundup4(b.Unpadded())
		if b.UOff > 0 { // an empty block serves nothing
			blocks[kept] = b
			kept++
		}
	}
	w.ix.Blocks = w.ix.Blocks[:first+kept]
	return kept, nil
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
	total, err := w.parseRecords(c, count)
	if err != nil {
		return 0, err
	}
	if err := checkIndexEnd(c, br, size); err != nil {
		return 0, err
	}
	return total, nil
}

// parseRecords reads count index records through c, appends their blocks
// (UOff holding the uncompressed size) and returns the blocks' total size
// on disk.
func (w *indexReader) parseRecords(c *crcReader, count uint64) (int64, error) {
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
	return total, nil
}

// checkIndexEnd checks the index's end after its records: zero padding
// (read through c), then the CRC32 of all before it (read from br), ending
// exactly at size.
func checkIndexEnd(c *crcReader, br io.ByteReader, size int64) error {
	for c.n%4 != 0 {
		b, err := c.ReadByte()
		if err != nil {
			return err
		}
		if b != 0 {
			return corrupt(c.n-1, "index padding is not zero")
		}
	}
	want := c.crc
	var crc [4]byte
	for i := range crc {
		var err error
		if crc[i], err = br.ReadByte(); err != nil {
			return corrupt(c.n, "index ends early")
		}
	}
	if c.n+4 != size {
		return corrupt(c.n, "index is %d bytes, but the footer says %d", c.n+4, size)
	}
	if binary.LittleEndian.Uint32(crc[:]) != want {
		return corrupt(c.n, "index CRC32 mismatch")
	}
	return nil
}
