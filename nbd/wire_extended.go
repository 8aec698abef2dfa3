package nbd

import (
	"encoding/binary"
	"fmt"

	"github.com/nbdloop/nbdloop/internal/request"
)

// Extended headers (doc/proto.md of the extension-ext-header branch:
// "Request message", "Extended reply chunk message",
// NBD_REPLY_TYPE_BLOCK_STATUS_EXT), used by clients that negotiated
// NBD_OPT_EXTENDED_HEADERS: 32-byte requests with a 64-bit length, and
// 32-byte reply chunk headers that repeat the request's offset.
const (
	extendedRequestMagic = 0x21e41c71 // NBD_EXTENDED_REQUEST_MAGIC
	extendedReplyMagic   = 0x6e8a278c // NBD_EXTENDED_REPLY_MAGIC

	// ExtRequestSize is the size of an extended request header.
	ExtRequestSize = 32
	// ExtChunkHeaderSize is the size of an extended reply chunk header:
	// magic, flags, type, cookie, offset, payload length.
	ExtChunkHeaderSize = 32
	// extDataChunkHeaderSize is the header of an extended
	// NBD_REPLY_TYPE_OFFSET_DATA chunk up to its data.
	extDataChunkHeaderSize = ExtChunkHeaderSize + 8

	// ReplyTypeBlockStatusExt is NBD_REPLY_TYPE_BLOCK_STATUS_EXT: block
	// status with 64-bit extent lengths and flags, the only block status
	// chunk sent with extended headers.
	ReplyTypeBlockStatusExt = 6

	// repErrExtHeaderReqd is NBD_REP_ERR_EXT_HEADER_REQD: the answer to
	// NBD_OPT_STRUCTURED_REPLY once extended headers are agreed.
	repErrExtHeaderReqd = 1<<31 + 10
)

// ParseExtendedRequest decodes a 32-byte extended request header. A WRITE's
// payload (NBD_CMD_FLAG_PAYLOAD_LEN) follows it on the wire.
func ParseExtendedRequest(b []byte) (RequestHeader, error) {
	if len(b) < ExtRequestSize {
		return RequestHeader{}, fmt.Errorf("nbd: extended request header is %d bytes, want %d", len(b), ExtRequestSize)
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != extendedRequestMagic {
		return RequestHeader{}, fmt.Errorf("%w 0x%08x (extended headers were negotiated)", ErrBadMagic, m)
	}
	return RequestHeader{
		Flags:  request.Flags(binary.BigEndian.Uint16(b[4:6])),
		Op:     request.Op(binary.BigEndian.Uint16(b[6:8])),
		Cookie: binary.BigEndian.Uint64(b[8:16]),
		Offset: binary.BigEndian.Uint64(b[16:24]),
		Length: binary.BigEndian.Uint64(b[24:32]),
	}, nil
}

// PutExtendedRequest encodes r into b[:ExtRequestSize].
func PutExtendedRequest(b []byte, r RequestHeader) {
	PutRequest(b, r)
	binary.BigEndian.PutUint32(b[0:4], extendedRequestMagic)
	binary.BigEndian.PutUint64(b[24:32], r.Length)
}

// ExtChunkHeader is a decoded extended reply chunk header.
type ExtChunkHeader struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64 // the request's
	Length uint64 // of the payload that follows
}

// PutExtChunkHeader encodes h into b[:ExtChunkHeaderSize].
func PutExtChunkHeader(b []byte, h ExtChunkHeader) {
	binary.BigEndian.PutUint32(b[0:4], extendedReplyMagic)
	binary.BigEndian.PutUint16(b[4:6], h.Flags)
	binary.BigEndian.PutUint16(b[6:8], h.Type)
	binary.BigEndian.PutUint64(b[8:16], h.Cookie)
	binary.BigEndian.PutUint64(b[16:24], h.Offset)
	binary.BigEndian.PutUint64(b[24:32], h.Length)
}

// ParseExtChunkHeader decodes a 32-byte extended reply chunk header.
func ParseExtChunkHeader(b []byte) (ExtChunkHeader, error) {
	if len(b) < ExtChunkHeaderSize {
		return ExtChunkHeader{}, fmt.Errorf("nbd: extended chunk header is %d bytes, want %d", len(b), ExtChunkHeaderSize)
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != extendedReplyMagic {
		return ExtChunkHeader{}, fmt.Errorf("nbd: bad extended reply magic 0x%08x", m)
	}
	return ExtChunkHeader{
		Flags:  binary.BigEndian.Uint16(b[4:6]),
		Type:   binary.BigEndian.Uint16(b[6:8]),
		Cookie: binary.BigEndian.Uint64(b[8:16]),
		Offset: binary.BigEndian.Uint64(b[16:24]),
		Length: binary.BigEndian.Uint64(b[24:32]),
	}, nil
}

// chunkFormat writes the reply chunk headers of one connection: 20-byte
// structured ones, or 32-byte extended ones when ext.
type chunkFormat struct{ ext bool }

// headerSize is the size of one chunk header.
func (f chunkFormat) headerSize() int {
	if f.ext {
		return ExtChunkHeaderSize
	}
	return ChunkHeaderSize
}

// put encodes a chunk header into b and returns its size. The extended
// header carries req's offset; the structured one has no room for it.
func (f chunkFormat) put(b []byte, flags, typ uint16, req *RequestHeader, payload uint64) int {
	if f.ext {
		PutExtChunkHeader(b, ExtChunkHeader{Flags: flags, Type: typ, Cookie: req.Cookie, Offset: req.Offset, Length: payload})
		return ExtChunkHeaderSize
	}
	PutChunkHeader(b, ChunkHeader{Flags: flags, Type: typ, Cookie: req.Cookie, Length: uint32(payload)})
	return ChunkHeaderSize
}
