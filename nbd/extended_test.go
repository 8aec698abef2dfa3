package nbd

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// bigSource is an extentSource that says it is size bytes: block status
// over more than 4 GiB needs no data behind it.
type bigSource struct {
	*extentSource
	size int64
}

func (s *bigSource) Size() int64 { return s.size }

// extRequest encodes an extended request header and its payload.
func extRequest(r RequestHeader, payload []byte) []byte {
	b := make([]byte, ExtRequestSize, ExtRequestSize+len(payload))
	PutExtendedRequest(b, r)
	return append(b, payload...)
}

// TestExtendedHeaders sends requests with extended headers to a session
// that negotiated them and compares the replies' bytes with the
// protocol's layout, field by field.
func TestExtendedHeaders(t *testing.T) {
	const (
		data = sources.ExtentData
		zero = sources.ExtentZero
		hole = sources.ExtentHole
		tib  = 1 << 40
	)
	layout := []sources.Extent{
		{Off: 0, Length: 4096, Kind: data},
		{Off: 4096, Length: 8 << 30, Kind: hole}, // 8 GiB: past what 32 bits hold
		{Off: 4096 + 8<<30, Length: tib - 4096 - 8<<30, Kind: zero},
	}
	msg := func(s string) string { return hex.EncodeToString([]byte(s)) }
	inval := `00000016 // length: 6 + 16
	          00000016 // NBD_EINVAL
	          0010     // message length
	          ` + msg("invalid argument")
	ss := Session{ExtendedHeaders: true, BaseAllocation: true}
	tests := []struct {
		name string
		in   []byte // what the client sends
		want string
		err  error // Serve's, errors.Is
		// next: a FLUSH sent after the reply is answered, so the
		// request left the stream where the next one begins.
		next bool
	}{
		{
			name: "READ: one extended OFFSET_DATA chunk",
			in:   extRequest(RequestHeader{Op: request.OpRead, Cookie: 0x0102030405060708, Offset: 16, Length: 8}, nil),
			want: `6e8a278c         // NBD_EXTENDED_REPLY_MAGIC
			       0001             // flags: NBD_REPLY_FLAG_DONE
			       0001             // type: NBD_REPLY_TYPE_OFFSET_DATA
			       0102030405060708 // cookie
			       0000000000000010 // the request's offset
			       0000000000000010 // payload length: offset + 8 bytes
			       0000000000000010 // offset 16
			       7077 7e85 8c93 9aa1 // data: byte(i*7) from 16`,
		},
		{
			name: "WRITE with PAYLOAD_LEN: a NONE chunk, never a simple reply",
			in:   extRequest(RequestHeader{Op: request.OpWrite, Flags: request.FlagPayloadLen, Cookie: 2, Offset: 4, Length: 4}, []byte{1, 2, 3, 4}),
			want: `6e8a278c 0001
			       0000             // NBD_REPLY_TYPE_NONE
			       0000000000000002 // cookie
			       0000000000000004 // offset
			       0000000000000000 // no payload`,
		},
		{
			name: "WRITE without PAYLOAD_LEN: EINVAL, no payload read",
			in:   extRequest(RequestHeader{Op: request.OpWrite, Cookie: 3, Offset: 0, Length: 4}, nil),
			want: `6e8a278c 0001
			       8001             // NBD_REPLY_TYPE_ERROR
			       0000000000000003 // cookie
			       0000000000000000 // offset
			       00000000` + inval,
			next: true,
		},
		{
			name: "TRIM with a payload: the payload is skipped, EINVAL",
			in:   extRequest(RequestHeader{Op: request.OpTrim, Flags: request.FlagPayloadLen, Cookie: 5, Offset: 0, Length: 3}, []byte{9, 9, 9}),
			want: `6e8a278c 0001 8001 0000000000000005 0000000000000000 00000000` + inval,
			next: true,
		},
		{
			name: "BLOCK_STATUS with a payload (not offered): EINVAL",
			in:   extRequest(RequestHeader{Op: request.OpBlockStatus, Flags: request.FlagPayloadLen, Cookie: 7, Length: 12}, make([]byte, 12)),
			want: `6e8a278c 0001 8001 0000000000000007 0000000000000000 00000000` + inval,
		},
		{
			name: "READ over the maximum payload: EOVERFLOW, the connection kept",
			in:   extRequest(RequestHeader{Op: request.OpRead, Cookie: 8, Offset: 0, Length: 1 << 33}, nil),
			want: `6e8a278c 0001 8001 0000000000000008 0000000000000000
			       000000000000002b // length: 6 + 37
			       0000004b         // NBD_EOVERFLOW
			       0025             // message length
			       ` + msg("value too large for defined data type"),
			next: true,
		},
		{
			name: "BLOCK_STATUS over 2^32: one BLOCK_STATUS_EXT chunk, 64-bit lengths",
			in:   extRequest(RequestHeader{Op: request.OpBlockStatus, Cookie: 10, Offset: 0, Length: tib}, nil),
			want: `6e8a278c         // magic
			       0001             // NBD_REPLY_FLAG_DONE
			       0006             // NBD_REPLY_TYPE_BLOCK_STATUS_EXT
			       000000000000000a // cookie
			       0000000000000000 // offset
			       0000000000000038 // length: 8 + 3 * 16
			       00000001         // metadata context: base:allocation
			       00000003         // descriptors
			       0000000000001000 0000000000000000 // 4 KiB of data
			       0000000200000000 0000000000000003 // 8 GiB: NBD_STATE_HOLE | NBD_STATE_ZERO
			       000000fdfffff000 0000000000000002 // the rest: NBD_STATE_ZERO`,
		},
		{
			name: "BLOCK_STATUS with REQ_ONE at an extreme offset",
			in:   extRequest(RequestHeader{Op: request.OpBlockStatus, Flags: request.FlagReqOne, Cookie: 11, Offset: tib - 512, Length: 512}, nil),
			want: `6e8a278c 0001 0006 000000000000000b 000000fffffffe00 // offset: 1 TiB - 512
			       0000000000000018 00000001 00000001
			       0000000000000200 0000000000000002`,
		},
		{
			name: "BLOCK_STATUS past the end: EINVAL",
			in:   extRequest(RequestHeader{Op: request.OpBlockStatus, Cookie: 12, Offset: 1 << 63, Length: 1<<64 - 1}, nil),
			want: `6e8a278c 0001 8001 000000000000000c 8000000000000000 00000000` + inval,
		},
		{
			name: "a payload over the maximum: the connection is dropped",
			in:   extRequest(RequestHeader{Op: request.OpWrite, Flags: request.FlagPayloadLen, Cookie: 13, Length: MaxPayload + 1}, nil),
			err:  ErrProtocol,
		},
		{
			name: "a compact request: bad magic",
			in:   compactFlush(),
			err:  ErrProtocol,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &bigSource{&extentSource{fakeSource: newFake(65536), extents: layout}, tib}
			h := serveSession(t, src, ss)
			if _, err := h.client.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			var want []byte
			if tt.err == nil {
				want = golden(t, tt.want)
			}
			got := make([]byte, len(want))
			h.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(h.client, got); err != nil {
				t.Fatalf("reading %d bytes of reply: %v", len(want), err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("reply\n[% x]\nwant\n[% x]", got, want)
			}
			if tt.next {
				h.client.Write(extRequest(RequestHeader{Op: request.OpFlush, Cookie: 99}, nil))
				want = golden(t, "6e8a278c 0001 0000 0000000000000063 0000000000000000 0000000000000000")
				got = make([]byte, len(want))
				if _, err := io.ReadFull(h.client, got); err != nil || !bytes.Equal(got, want) {
					t.Errorf("FLUSH after it: [% x], %v; want [% x]", got, err, want)
				}
			}
			if tt.err == nil {
				h.client.Close()
			}
			if err := h.wait(); tt.err == nil && err != nil || tt.err != nil && !errors.Is(err, tt.err) {
				t.Errorf("Serve = %v, want %v", err, tt.err)
			}
		})
	}
}

// compactFlush is a compact FLUSH request, padded to an extended one's
// size.
func compactFlush() []byte {
	b := make([]byte, ExtRequestSize)
	PutRequest(b, RequestHeader{Op: request.OpFlush})
	return b
}
