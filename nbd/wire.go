package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/nbdloop/nbdloop/internal/request"
)

// Magic numbers and sizes of the transmission phase (NBD protocol
// doc/proto.md; include/uapi/linux/nbd.h).
const (
	requestMagic = 0x25609513 // NBD_REQUEST_MAGIC
	replyMagic   = 0x67446698 // NBD_SIMPLE_REPLY_MAGIC

	// RequestSize is the size of a request header on the wire.
	RequestSize = 28
	// ReplySize is the size of a simple reply header on the wire.
	ReplySize = 16

	// MaxPayload is the largest READ or WRITE the server accepts: the
	// kernel's max_hw_sectors (65536 sectors) and the protocol's default
	// maximum payload, 32 MiB.
	MaxPayload = 32 << 20
)

// Transmission flags, sent to the kernel as NBD_ATTR_SERVER_FLAGS.
const (
	FlagHasFlags        = 1 << 0 // NBD_FLAG_HAS_FLAGS
	FlagReadOnly        = 1 << 1 // NBD_FLAG_READ_ONLY
	FlagSendFlush       = 1 << 2 // NBD_FLAG_SEND_FLUSH
	FlagSendFUA         = 1 << 3 // NBD_FLAG_SEND_FUA
	FlagRotational      = 1 << 4 // NBD_FLAG_ROTATIONAL
	FlagSendTrim        = 1 << 5 // NBD_FLAG_SEND_TRIM
	FlagSendWriteZeroes = 1 << 6 // NBD_FLAG_SEND_WRITE_ZEROES
	FlagCanMultiConn    = 1 << 8 // NBD_FLAG_CAN_MULTI_CONN
)

// RequestHeader is a decoded request header. Its Op and Flags are the
// request package's, the vocabulary of Options.Observe and of the filters.
type RequestHeader struct {
	Flags  request.Flags
	Op     request.Op
	Cookie uint64
	Offset uint64
	// Length is 32 bits on the wire, 64 with extended headers.
	Length uint64
}

// ErrBadMagic is returned by ParseRequest for a header whose magic is wrong:
// the stream is out of sync and the connection cannot continue.
var ErrBadMagic = errors.New("nbd: bad request magic")

// ParseRequest decodes a 28-byte request header. It does not look at the
// payload of a WRITE, which follows the header on the wire.
func ParseRequest(b []byte) (RequestHeader, error) {
	if len(b) < RequestSize {
		return RequestHeader{}, fmt.Errorf("nbd: request header is %d bytes, want %d", len(b), RequestSize)
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != requestMagic {
		return RequestHeader{}, fmt.Errorf("%w 0x%08x", ErrBadMagic, m)
	}
	return RequestHeader{
		Flags:  request.Flags(binary.BigEndian.Uint16(b[4:6])),
		Op:     request.Op(binary.BigEndian.Uint16(b[6:8])),
		Cookie: binary.BigEndian.Uint64(b[8:16]),
		Offset: binary.BigEndian.Uint64(b[16:24]),
		Length: uint64(binary.BigEndian.Uint32(b[24:28])),
	}, nil
}

// PutRequest encodes r into b[:RequestSize], r.Length below 2^32; clients
// and tests use it.
func PutRequest(b []byte, r RequestHeader) {
	binary.BigEndian.PutUint32(b[0:4], requestMagic)
	binary.BigEndian.PutUint16(b[4:6], uint16(r.Flags))
	binary.BigEndian.PutUint16(b[6:8], uint16(r.Op))
	binary.BigEndian.PutUint64(b[8:16], r.Cookie)
	binary.BigEndian.PutUint64(b[16:24], r.Offset)
	binary.BigEndian.PutUint32(b[24:28], uint32(r.Length))
}

// PutReply encodes a simple reply header into b[:ReplySize].
func PutReply(b []byte, errCode uint32, cookie uint64) {
	binary.BigEndian.PutUint32(b[0:4], replyMagic)
	binary.BigEndian.PutUint32(b[4:8], errCode)
	binary.BigEndian.PutUint64(b[8:16], cookie)
}

// Reply is a decoded simple reply header.
type Reply struct {
	Error  uint32
	Cookie uint64
}

// ParseReply decodes a 16-byte simple reply header.
func ParseReply(b []byte) (Reply, error) {
	if len(b) < ReplySize {
		return Reply{}, fmt.Errorf("nbd: reply header is %d bytes, want %d", len(b), ReplySize)
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != replyMagic {
		return Reply{}, fmt.Errorf("nbd: bad reply magic 0x%08x", m)
	}
	return Reply{Error: binary.BigEndian.Uint32(b[4:8]), Cookie: binary.BigEndian.Uint64(b[8:16])}, nil
}
