package nbd

import (
	"encoding/binary"
	"fmt"
)

// Structured replies (doc/proto.md, "Structured reply chunk message" and
// "Structured reply types"), sent to clients that negotiated
// NBD_OPT_STRUCTURED_REPLY.
const (
	structuredReplyMagic = 0x668e33ef // NBD_STRUCTURED_REPLY_MAGIC

	// ChunkHeaderSize is the size of a structured reply chunk header on
	// the wire: magic, flags, type, cookie, payload length.
	ChunkHeaderSize = 20
	// dataChunkHeaderSize is the header of an NBD_REPLY_TYPE_OFFSET_DATA
	// chunk up to its data: the chunk header and the offset.
	dataChunkHeaderSize = ChunkHeaderSize + 8

	// ReplyFlagDone marks the last chunk of a reply (NBD_REPLY_FLAG_DONE).
	ReplyFlagDone = 1 << 0

	// Chunk types. Error chunks have bit 15 set.
	ReplyTypeNone        = 0         // NBD_REPLY_TYPE_NONE
	ReplyTypeOffsetData  = 1         // NBD_REPLY_TYPE_OFFSET_DATA
	ReplyTypeOffsetHole  = 2         // NBD_REPLY_TYPE_OFFSET_HOLE
	ReplyTypeBlockStatus = 5         // NBD_REPLY_TYPE_BLOCK_STATUS
	ReplyTypeError       = 1<<15 + 1 // NBD_REPLY_TYPE_ERROR
	ReplyTypeErrorOffset = 1<<15 + 2 // NBD_REPLY_TYPE_ERROR_OFFSET

	// Flags of a base:allocation extent (NBD_STATE_*).
	StateHole = 1 << 0 // NBD_STATE_HOLE
	StateZero = 1 << 1 // NBD_STATE_ZERO

	// FlagSendDF is the transmission flag NBD_FLAG_SEND_DF: READ takes
	// NBD_CMD_FLAG_DF. It is offered only with structured replies.
	FlagSendDF = 1 << 7
)

// ChunkHeader is a decoded structured reply chunk header.
type ChunkHeader struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Length uint32 // of the payload that follows
}

// PutChunkHeader encodes h into b[:ChunkHeaderSize].
func PutChunkHeader(b []byte, h ChunkHeader) {
	binary.BigEndian.PutUint32(b[0:4], structuredReplyMagic)
	binary.BigEndian.PutUint16(b[4:6], h.Flags)
	binary.BigEndian.PutUint16(b[6:8], h.Type)
	binary.BigEndian.PutUint64(b[8:16], h.Cookie)
	binary.BigEndian.PutUint32(b[16:20], h.Length)
}

// ParseChunkHeader decodes a 20-byte structured reply chunk header.
func ParseChunkHeader(b []byte) (ChunkHeader, error) {
	if len(b) < ChunkHeaderSize {
		return ChunkHeader{}, fmt.Errorf("nbd: chunk header is %d bytes, want %d", len(b), ChunkHeaderSize)
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != structuredReplyMagic {
		return ChunkHeader{}, fmt.Errorf("nbd: bad structured reply magic 0x%08x", m)
	}
	return ChunkHeader{
		Flags:  binary.BigEndian.Uint16(b[4:6]),
		Type:   binary.BigEndian.Uint16(b[6:8]),
		Cookie: binary.BigEndian.Uint64(b[8:16]),
		Length: binary.BigEndian.Uint32(b[16:20]),
	}, nil
}

// putDataChunkHeader encodes the header of an NBD_REPLY_TYPE_OFFSET_DATA
// chunk of n bytes at off, in reply to req, into b and returns its size
// (dataChunkHeaderSize, or extDataChunkHeaderSize with extended headers);
// the data follows it. The chunk is the reply's last when done.
func (f chunkFormat) putDataChunkHeader(b []byte, req *RequestHeader, off uint64, n int, done bool) int {
	var flags uint16
	if done {
		flags = ReplyFlagDone
	}
	h := f.put(b, flags, ReplyTypeOffsetData, req, 8+uint64(n))
	binary.BigEndian.PutUint64(b[h:h+8], off)
	return h + 8
}

// putHoleChunk encodes an NBD_REPLY_TYPE_OFFSET_HOLE chunk of n bytes at
// off, in reply to req, into b and returns its size; the chunk is the
// reply's last when done.
func (f chunkFormat) putHoleChunk(b []byte, req *RequestHeader, off uint64, n uint32, done bool) int {
	var flags uint16
	if done {
		flags = ReplyFlagDone
	}
	h := f.put(b, flags, ReplyTypeOffsetHole, req, 12)
	binary.BigEndian.PutUint64(b[h:h+8], off)
	binary.BigEndian.PutUint32(b[h+8:h+12], n)
	return h + 12
}

// putNoneChunk encodes the NBD_REPLY_TYPE_NONE chunk that ends a
// successful reply to req without data into b and returns its size.
func (f chunkFormat) putNoneChunk(b []byte, req *RequestHeader) int {
	return f.put(b, ReplyFlagDone, ReplyTypeNone, req, 0)
}

// appendErrorChunk appends a final error chunk in reply to req:
// NBD_REPLY_TYPE_ERROR, or NBD_REPLY_TYPE_ERROR_OFFSET at off when
// withOffset, with errCode (an NBD error value, not 0) and msg for the
// user (at most MaxNameLength bytes are sent).
func (f chunkFormat) appendErrorChunk(b []byte, req *RequestHeader, errCode uint32, msg string, withOffset bool, off uint64) []byte {
	if len(msg) > MaxNameLength {
		msg = msg[:MaxNameLength]
	}
	typ, payload := uint16(ReplyTypeError), 6+uint64(len(msg))
	if withOffset {
		typ, payload = ReplyTypeErrorOffset, payload+8
	}
	var hdr [ExtChunkHeaderSize + 6]byte
	h := f.put(hdr[:], ReplyFlagDone, typ, req, payload)
	binary.BigEndian.PutUint32(hdr[h:h+4], errCode)
	binary.BigEndian.PutUint16(hdr[h+4:h+6], uint16(len(msg)))
	b = append(append(b, hdr[:h+6]...), msg...)
	if withOffset {
		b = binary.BigEndian.AppendUint64(b, off)
	}
	return b
}

// blockStatusChunkSize is the size of a final block status chunk of n
// extents: the header, the context ID, 8 bytes per extent; with extended
// headers (NBD_REPLY_TYPE_BLOCK_STATUS_EXT) the header, the context ID,
// the count and 16 bytes per extent.
func (f chunkFormat) blockStatusChunkSize(n int) int {
	if f.ext {
		return ExtChunkHeaderSize + 8 + 16*n
	}
	return ChunkHeaderSize + 4 + 8*n
}

// extentSize is the size of one block status descriptor.
func (f chunkFormat) extentSize() int {
	if f.ext {
		return 16
	}
	return 8
}

// putBlockStatusHeader encodes the header of the final block status chunk
// of n extents for metadata context id, in reply to req, into b and
// returns its size; the extents follow, each put with putExtent.
func (f chunkFormat) putBlockStatusHeader(b []byte, req *RequestHeader, id uint32, n int) int {
	if f.ext {
		h := f.put(b, ReplyFlagDone, ReplyTypeBlockStatusExt, req, 8+16*uint64(n))
		binary.BigEndian.PutUint32(b[h:h+4], id)
		binary.BigEndian.PutUint32(b[h+4:h+8], uint32(n))
		return h + 8
	}
	h := f.put(b, ReplyFlagDone, ReplyTypeBlockStatus, req, 4+8*uint64(n))
	binary.BigEndian.PutUint32(b[h:h+4], id)
	return h + 4
}

// putExtent encodes one block status descriptor into b[:f.extentSize()];
// without extended headers, length is below 2^32.
func (f chunkFormat) putExtent(b []byte, length uint64, flags uint32) {
	if f.ext {
		binary.BigEndian.PutUint64(b[0:8], length)
		binary.BigEndian.PutUint64(b[8:16], uint64(flags))
		return
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(length))
	binary.BigEndian.PutUint32(b[4:8], flags)
}
