package pack

import (
	"encoding/binary"
	"errors"

	kzstd "github.com/klauspost/compress/zstd"
)

type zstdCodec struct {
	enc     *kzstd.Encoder
	entries []byte
	count   uint32
}

func newZstdCodec(opts Options) (*zstdCodec, error) {
	if opts.Level < 1 || opts.Level > 22 {
		return nil, errors.New("zstd level must be from 1 to 22")
	}
	enc, err := kzstd.NewWriter(nil, kzstd.WithEncoderLevel(kzstd.EncoderLevelFromZstd(opts.Level)),
		kzstd.WithEncoderCRC(true), kzstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &zstdCodec{enc: enc}, nil
}

func (c *zstdCodec) header() []byte { return nil }

// block compresses p into one frame (EncodeAll is safe for concurrent use
// and writes the content size and a checksum).
func (c *zstdCodec) block(p []byte) ([]byte, error) {
	return c.enc.EncodeAll(p, make([]byte, 0, len(p)/2)), nil
}

func (c *zstdCodec) add(in, out int64, data []byte) {
	c.entries = binary.LittleEndian.AppendUint32(c.entries, uint32(out))
	c.entries = binary.LittleEndian.AppendUint32(c.entries, uint32(in))
	c.count++
}

// trailer is the seek table: a skippable frame of entries and the footer
// (frame count, descriptor 0: no checksums, seekable magic).
func (c *zstdCodec) trailer() []byte {
	t := binary.LittleEndian.AppendUint32(nil, 0x184D2A5E)
	t = binary.LittleEndian.AppendUint32(t, uint32(len(c.entries)+9))
	t = append(t, c.entries...)
	t = binary.LittleEndian.AppendUint32(t, c.count)
	t = append(t, 0)
	return binary.LittleEndian.AppendUint32(t, 0x8F92EAB1)
}
