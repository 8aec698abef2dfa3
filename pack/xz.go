package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"hash/crc64"
	"sync"

	"github.com/ulikunitz/xz/lzma"
)

// xz presets' dictionary sizes by level, as xz(1) lists them.
var xzDict = [10]int{256 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20, 8 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20}

var crc64Table = crc64.MakeTable(crc64.ECMA)

type xzCodec struct {
	cfg     lzma.Writer2Config
	dict    byte // LZMA2 dictionary size code for the block headers
	records []byte
	count   uint64
	pool    sync.Pool
}

func newXZCodec(opts Options) (*xzCodec, error) {
	if opts.Level < 0 || opts.Level > 9 {
		return nil, errors.New("xz level must be from 0 to 9")
	}
	dict := int(max(lzma.MinDictCap, min(int64(xzDict[opts.Level]), opts.BlockSize)))
	// Always the hash-table matcher: ulikunitz/xz's binary tree took
	// minutes for a few MiB of disk-like data here.
	c := &xzCodec{cfg: lzma.Writer2Config{DictCap: dict, Matcher: lzma.HashTable4}, dict: lzma.EncodeDictCap(int64(dict))}
	if err := c.cfg.Verify(); err != nil {
		return nil, err
	}
	return c, nil
}

// header is the stream header: magic, flags (CRC64 checks), CRC32.
func (c *xzCodec) header() []byte {
	h := []byte{0xFD, '7', 'z', 'X', 'Z', 0, 0, 0x04}
	return binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(h[6:8]))
}

func putVarint(b []byte, x uint64) []byte {
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}

// block compresses p into a whole xz block: a header with both sizes,
// the LZMA2 data, padding and the CRC64 of p.
func (c *xzCodec) block(p []byte) ([]byte, error) {
	buf, _ := c.pool.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer c.pool.Put(buf)
	buf.Reset()
	w, err := c.cfg.NewWriter2(buf)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(p); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	csize := buf.Len()
	h := []byte{0, 0x40 | 0x80}
	h = putVarint(h, uint64(csize))
	h = putVarint(h, uint64(len(p)))
	h = append(h, 0x21, 0x01, c.dict) // LZMA2, 1 property byte
	for (len(h)+4)%4 != 0 {
		h = append(h, 0)
	}
	h[0] = byte((len(h)+4)/4 - 1)
	h = binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(h))
	out := make([]byte, 0, len(h)+csize+3+8)
	out = append(out, h...)
	out = append(out, buf.Bytes()...)
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return binary.LittleEndian.AppendUint64(out, crc64.Checksum(p, crc64Table)), nil
}

// add records a written block in the index.
func (c *xzCodec) add(in, out int64, data []byte) {
	hlen := (int(data[0]) + 1) * 4
	csize, _ := binary.Uvarint(data[2:hlen]) // xz varints are LEB128, like Uvarint
	unpadded := uint64(hlen) + csize + 8
	c.records = putVarint(c.records, unpadded)
	c.records = putVarint(c.records, uint64(in))
	c.count++
}

// trailer is the index and the stream footer.
func (c *xzCodec) trailer() []byte {
	idx := putVarint([]byte{0}, c.count)
	idx = append(idx, c.records...)
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	ft := binary.LittleEndian.AppendUint32(nil, uint32(len(idx)/4-1))
	ft = append(ft, 0, 0x04)
	out := append(idx, binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(ft))...)
	out = append(out, ft...)
	return append(out, 'Y', 'Z')
}
