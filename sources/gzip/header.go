package gzip

import (
	"encoding/binary"
	"io"
)

// Member header fields [RFC 1952].
const (
	flagText    = 1 << 0
	flagHCRC    = 1 << 1
	flagExtra   = 1 << 2
	flagName    = 1 << 3
	flagComment = 1 << 4
	maxField    = 1 << 20 // longest FNAME/FCOMMENT accepted
)

// header is what a member header says that we use.
type header struct {
	size  int64 // header bytes
	bsize int64 // BGZF: the whole member's size, or 0
}

// readHeader parses a member header from r, whose first byte is at file
// offset at.
func readHeader(r io.ByteReader, at int64) (header, error) {
	h := header{}
	hr := &headerReader{r: r}
	flags, err := hr.fixed(at)
	if err != nil {
		return h, err
	}
	if flags&flagExtra != 0 {
		if h.bsize, err = hr.extra(at); err != nil {
			return h, err
		}
	}
	if err := hr.skipStrings(flags, at); err != nil {
		return h, err
	}
	if flags&flagHCRC != 0 {
		if err := hr.skipHeaderCRC(at); err != nil {
			return h, err
		}
	}
	h.size = hr.n
	return h, nil
}

// headerReader reads a member header byte by byte, counting the bytes; the
// header's errors name its file offset, at.
type headerReader struct {
	r io.ByteReader
	n int64 // bytes read
}

// next returns the next byte; the end of the data is io.ErrUnexpectedEOF.
func (hr *headerReader) next() (byte, error) {
	b, err := hr.r.ReadByte()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	hr.n++
	return b, err
}

// fixed reads the header's 10 fixed bytes, checks the magic, the method
// and the reserved flags, and returns the flags.
func (hr *headerReader) fixed(at int64) (byte, error) {
	var fixed [10]byte
	for i := range fixed {
		b, err := hr.next()
		if err != nil {
			return 0, corrupt(at, "truncated member header")
		}
		fixed[i] = b
	}
	if fixed[0] != 0x1F || fixed[1] != 0x8B {
		return 0, corrupt(at, "no gzip magic")
	}
	if fixed[2] != 8 {
		return 0, corrupt(at, "compression method %d is not deflate", fixed[2])
	}
	flags := fixed[3]
	if flags&0xE0 != 0 {
		return 0, corrupt(at, "reserved header flags %#02x are set", flags)
	}
	return flags, nil
}

// extra reads the extra field and returns the BGZF member size it holds,
// or 0.
func (hr *headerReader) extra(at int64) (int64, error) {
	lo, err1 := hr.next()
	hi, err2 := hr.next()
	if err1 != nil || err2 != nil {
		return 0, corrupt(at, "truncated extra field")
	}
	xlen := int(lo) | int(hi)<<8
	extra := make([]byte, xlen)
	for i := range extra {
		b, err := hr.next()
		if err != nil {
			return 0, corrupt(at, "truncated extra field")
		}
		extra[i] = b
	}
	return bgzfSize(extra), nil
}

// bgzfSize returns the member size that a BGZF extra field holds (its
// subfield "BC" of 2 bytes is the member size - 1), or 0.
func bgzfSize(extra []byte) int64 {
	var bsize int64
	for len(extra) >= 4 {
		slen := int(binary.LittleEndian.Uint16(extra[2:4]))
		if len(extra) < 4+slen {
			break
		}
		if extra[0] == 'B' && extra[1] == 'C' && slen == 2 {
			bsize = int64(binary.LittleEndian.Uint16(extra[4:6])) + 1
		}
		extra = extra[4+slen:]
	}
	return bsize
}

// skipStrings skips the NUL-terminated file name and comment that flags
// announce, each at most maxField bytes.
func (hr *headerReader) skipStrings(flags byte, at int64) error {
	for _, f := range []byte{flagName, flagComment} {
		if flags&f == 0 {
			continue
		}
		for k := 0; ; k++ {
			b, err := hr.next()
			if err != nil {
				return corrupt(at, "truncated file name or comment")
			}
			if b == 0 {
				break
			}
			if k > maxField {
				return corrupt(at, "file name or comment longer than %d bytes", maxField)
			}
		}
	}
	return nil
}

// skipHeaderCRC skips the header's CRC16.
func (hr *headerReader) skipHeaderCRC(at int64) error {
	if _, err := hr.next(); err != nil {
		return corrupt(at, "truncated header CRC")
	}
	if _, err := hr.next(); err != nil {
		return corrupt(at, "truncated header CRC")
	}
	return nil
}
