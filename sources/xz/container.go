package xz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

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
