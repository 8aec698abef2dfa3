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

// putDataChunkHeader encodes the header of the one, final
// NBD_REPLY_TYPE_OFFSET_DATA chunk of a READ of n bytes at off into
// b[:dataChunkHeaderSize]; the data follows it.
func putDataChunkHeader(b []byte, cookie, off uint64, n int) {
	PutChunkHeader(b, ChunkHeader{Flags: ReplyFlagDone, Type: ReplyTypeOffsetData, Cookie: cookie, Length: 8 + uint32(n)})
	binary.BigEndian.PutUint64(b[20:28], off)
}

// putNoneChunk encodes the NBD_REPLY_TYPE_NONE chunk that ends a
// successful reply without data into b[:ChunkHeaderSize].
func putNoneChunk(b []byte, cookie uint64) {
	PutChunkHeader(b, ChunkHeader{Flags: ReplyFlagDone, Type: ReplyTypeNone, Cookie: cookie})
}

// appendErrorChunk appends a final error chunk: NBD_REPLY_TYPE_ERROR, or
// NBD_REPLY_TYPE_ERROR_OFFSET at off when withOffset, with errCode (an
// NBD error value, not 0) and msg for the user (at most MaxNameLength
// bytes are sent).
func appendErrorChunk(b []byte, cookie uint64, errCode uint32, msg string, withOffset bool, off uint64) []byte {
	if len(msg) > MaxNameLength {
		msg = msg[:MaxNameLength]
	}
	h := ChunkHeader{Flags: ReplyFlagDone, Type: ReplyTypeError, Cookie: cookie, Length: 6 + uint32(len(msg))}
	if withOffset {
		h.Type = ReplyTypeErrorOffset
		h.Length += 8
	}
	var hdr [ChunkHeaderSize + 6]byte
	PutChunkHeader(hdr[:], h)
	binary.BigEndian.PutUint32(hdr[20:24], errCode)
	binary.BigEndian.PutUint16(hdr[24:26], uint16(len(msg)))
	b = append(append(b, hdr[:]...), msg...)
	if withOffset {
		b = binary.BigEndian.AppendUint64(b, off)
	}
	return b
}

// blockStatusChunkSize is the size of an NBD_REPLY_TYPE_BLOCK_STATUS
// chunk of n extents: the header, the context ID, 8 bytes per extent.
func blockStatusChunkSize(n int) int { return ChunkHeaderSize + 4 + 8*n }

// putBlockStatusHeader encodes the header of the final
// NBD_REPLY_TYPE_BLOCK_STATUS chunk of n extents for metadata context id
// into b[:ChunkHeaderSize+4]; the extents follow, each put with
// putExtent.
func putBlockStatusHeader(b []byte, cookie uint64, id uint32, n int) {
	PutChunkHeader(b, ChunkHeader{Flags: ReplyFlagDone, Type: ReplyTypeBlockStatus, Cookie: cookie, Length: 4 + 8*uint32(n)})
	binary.BigEndian.PutUint32(b[20:24], id)
}

// putExtent encodes one block status descriptor into b[:8].
func putExtent(b []byte, length, flags uint32) {
	binary.BigEndian.PutUint32(b[0:4], length)
	binary.BigEndian.PutUint32(b[4:8], flags)
}
