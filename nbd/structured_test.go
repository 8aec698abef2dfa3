package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// extentSource is a fakeSource that reports fixed extents (clipped to
// the range asked), or fails with err.
type extentSource struct {
	*fakeSource
	extents []sources.Extent
	err     error
}

func (s *extentSource) Extents(off, length int64, fn func(sources.Extent) bool) error {
	if s.err != nil {
		return s.err
	}
	end := off + length
	for _, e := range s.extents {
		if e.End() <= off || e.Off >= end {
			continue
		}
		lo, hi := max(e.Off, off), min(e.End(), end)
		if !fn(sources.Extent{Off: lo, Length: hi - lo, Kind: e.Kind}) {
			return nil
		}
	}
	return nil
}

// serveSession serves src to one client that negotiated ss's extensions
// and returns the client's end.
func serveSession(t testing.TB, src sources.Source, ss Session) *harness {
	t.Helper()
	client, server := socketpair(t)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, client: client, done: make(chan error, 1), cancel: cancel}
	ss.Export = &Export{Name: "test", Server: NewServer(src, Options{})}
	go func() { h.done <- ss.Serve(ctx, server, 0) }()
	t.Cleanup(cancel)
	return h
}

// golden joins hex fields, one wire field per line with a comment after
// "//", into bytes.
func golden(t *testing.T, annotated string) []byte {
	t.Helper()
	var h strings.Builder
	for _, line := range strings.Split(annotated, "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		h.WriteString(strings.ReplaceAll(strings.TrimSpace(line), " ", ""))
	}
	b, err := hex.DecodeString(h.String())
	if err != nil {
		t.Fatalf("golden bytes: %v", err)
	}
	return b
}

// TestStructuredReplies sends one request to a session and compares the
// reply's bytes with the protocol's layout, field by field.
func TestStructuredReplies(t *testing.T) {
	const (
		data = sources.ExtentData
		zero = sources.ExtentZero
		hole = sources.ExtentHole
	)
	layout := []sources.Extent{
		{Off: 0, Length: 4096, Kind: data},
		{Off: 4096, Length: 4096, Kind: hole},
		{Off: 8192, Length: 4096, Kind: hole}, // merged with the one before
		{Off: 12288, Length: 8192, Kind: zero},
		{Off: 20480, Length: 65536 - 20480, Kind: data},
	}
	msg := func(s string) string { return hex.EncodeToString([]byte(s)) }
	tests := []struct {
		name    string
		ss      Session // Export is filled in
		readErr error
		req     RequestHeader
		payload []byte
		want    string
	}{
		{
			name: "READ: one OFFSET_DATA chunk",
			ss:   Session{StructuredReplies: true},
			req:  RequestHeader{Op: request.OpRead, Cookie: 0x0102030405060708, Offset: 16, Length: 8},
			want: `668e33ef         // NBD_STRUCTURED_REPLY_MAGIC
			       0001             // flags: NBD_REPLY_FLAG_DONE
			       0001             // type: NBD_REPLY_TYPE_OFFSET_DATA
			       0102030405060708 // cookie
			       00000010         // length: offset + 8 bytes
			       0000000000000010 // offset 16
			       7077 7e85 8c93 9aa1 // data: byte(i*7) from 16`,
		},
		{
			name: "READ with DF: the same one chunk",
			ss:   Session{StructuredReplies: true},
			req:  RequestHeader{Op: request.OpRead, Flags: request.FlagDF, Cookie: 9, Offset: 0, Length: 2},
			want: `668e33ef 0001 0001 0000000000000009
			       0000000a         // length: offset + 2 bytes
			       0000000000000000 // offset 0
			       0007             // data`,
		},
		{
			name:    "WRITE: a simple reply (allowed but for READ and BLOCK_STATUS, as nbdkit and qemu-nbd send)",
			ss:      Session{StructuredReplies: true},
			req:     RequestHeader{Op: request.OpWrite, Cookie: 2, Offset: 0, Length: 4},
			payload: []byte{1, 2, 3, 4},
			want: `67446698         // NBD_SIMPLE_REPLY_MAGIC
			       00000000         // no error
			       0000000000000002 // cookie`,
		},
		{
			name: "FLUSH: a simple reply",
			ss:   Session{StructuredReplies: true},
			req:  RequestHeader{Op: request.OpFlush, Cookie: 3},
			want: `67446698 00000000 0000000000000003`,
		},
		{
			name:    "WRITE that fails: an ERROR chunk with the error's text",
			ss:      Session{StructuredReplies: true},
			req:     RequestHeader{Op: request.OpWrite, Cookie: 4, Offset: 4096 * 3, Length: 4},
			payload: []byte{1, 2, 3, 4},
			want: `668e33ef 0001
			       8001             // NBD_REPLY_TYPE_ERROR
			       0000000000000004 // cookie
			       0000001d         // length: 6 + 23
			       0000001c         // NBD_ENOSPC
			       0017             // message length
			       ` + msg("no space left on device"),
		},
		{
			name:    "READ that fails: ERROR_OFFSET at the request's offset",
			ss:      Session{StructuredReplies: true},
			readErr: fmt.Errorf("fake: %w", syscall.EIO),
			req:     RequestHeader{Op: request.OpRead, Cookie: 5, Offset: 512, Length: 4096},
			want: `668e33ef 0001
			       8002             // NBD_REPLY_TYPE_ERROR_OFFSET
			       0000000000000005 // cookie
			       00000020         // length: 6 + 18 + 8
			       00000005         // NBD_EIO
			       0012             // message length
			       ` + msg("input/output error") + `
			       0000000000000200 // offset 512`,
		},
		{
			name: "READ past the end: an ERROR chunk, EINVAL",
			ss:   Session{StructuredReplies: true},
			req:  RequestHeader{Op: request.OpRead, Cookie: 6, Offset: 65536, Length: 1},
			want: `668e33ef 0001 8001 0000000000000006
			       00000016 // length: 6 + 16
			       00000016 // NBD_EINVAL
			       0010     // message length
			       ` + msg("invalid argument"),
		},
		{
			name: "BLOCK_STATUS: the extents, neighbours merged",
			ss:   Session{StructuredReplies: true, BaseAllocation: true},
			req:  RequestHeader{Op: request.OpBlockStatus, Cookie: 7, Offset: 0, Length: 65536},
			want: `668e33ef         // magic
			       0001             // NBD_REPLY_FLAG_DONE
			       0005             // NBD_REPLY_TYPE_BLOCK_STATUS
			       0000000000000007 // cookie
			       00000024         // length: 4 + 4 * 8
			       00000001         // metadata context: base:allocation
			       00001000 00000000 // 4 KiB of data
			       00002000 00000003 // 8 KiB: NBD_STATE_HOLE | NBD_STATE_ZERO
			       00002000 00000002 // 8 KiB: NBD_STATE_ZERO
			       0000b000 00000000 // the rest: data`,
		},
		{
			name: "BLOCK_STATUS of a range inside",
			ss:   Session{StructuredReplies: true, BaseAllocation: true},
			req:  RequestHeader{Op: request.OpBlockStatus, Cookie: 8, Offset: 6144, Length: 8192},
			want: `668e33ef 0001 0005 0000000000000008
			       00000014          // length: 4 + 2 * 8
			       00000001          // base:allocation
			       00001800 00000003 // 6 KiB of hole
			       00000800 00000002 // 2 KiB of zeros`,
		},
		{
			name: "BLOCK_STATUS with REQ_ONE: one extent",
			ss:   Session{StructuredReplies: true, BaseAllocation: true},
			req:  RequestHeader{Op: request.OpBlockStatus, Flags: request.FlagReqOne, Cookie: 9, Offset: 4096, Length: 65536 - 4096},
			want: `668e33ef 0001 0005 0000000000000009
			       0000000c          // length: 4 + 8
			       00000001          // base:allocation
			       00002000 00000003 // the hole, both parts`,
		},
		{
			name: "BLOCK_STATUS of length 0: EINVAL",
			ss:   Session{StructuredReplies: true, BaseAllocation: true},
			req:  RequestHeader{Op: request.OpBlockStatus, Cookie: 10, Offset: 0, Length: 0},
			want: `668e33ef 0001 8001 000000000000000a 00000016 00000016 0010 ` + msg("invalid argument"),
		},
		{
			name: "BLOCK_STATUS without base:allocation selected: EINVAL",
			ss:   Session{StructuredReplies: true},
			req:  RequestHeader{Op: request.OpBlockStatus, Cookie: 11, Offset: 0, Length: 4096},
			want: `668e33ef 0001 8001 000000000000000b 00000016 00000016 0010 ` + msg("invalid argument"),
		},
		{
			name: "kernel (no handshake): READ gets a simple reply",
			req:  RequestHeader{Op: request.OpRead, Cookie: 12, Offset: 16, Length: 2},
			want: `67446698         // NBD_SIMPLE_REPLY_MAGIC
			       00000000         // no error
			       000000000000000c // cookie
			       7077             // data`,
		},
		{
			name: "kernel: BLOCK_STATUS is EINVAL in a simple reply",
			req:  RequestHeader{Op: request.OpBlockStatus, Cookie: 13, Offset: 0, Length: 4096},
			want: `67446698 00000016 000000000000000d`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(65536)
			f.readErr = tt.readErr
			h := serveSession(t, &extentSource{fakeSource: f, extents: layout}, tt.ss)
			h.send(tt.req, tt.payload)
			want := golden(t, tt.want)
			got := make([]byte, len(want))
			// A reply shorter than want ends in an error, not a hang.
			timer := time.AfterFunc(10*time.Second, func() { h.client.Close() })
			defer timer.Stop()
			if _, err := io.ReadFull(h.client, got); err != nil {
				t.Fatalf("reading %d bytes of reply: %v", len(want), err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("reply\n[% x]\nwant\n[% x]", got, want)
			}
			h.client.Close()
			if err := h.wait(); err != nil {
				t.Errorf("Serve = %v", err)
			}
		})
	}
}

// TestBlockStatusBounds: a reply holds at most maxExtents extents, and a
// Source that fails reports its error, or the extents it gave before.
func TestBlockStatusBounds(t *testing.T) {
	const size = 4 * maxExtents * 512
	var alternating []sources.Extent
	for off := int64(0); off < size; off += 512 {
		alternating = append(alternating, sources.Extent{Off: off, Length: 512, Kind: sources.ExtentKind(off / 512 % 2 * 2)})
	}
	ss := Session{StructuredReplies: true, BaseAllocation: true}
	t.Run("bounded", func(t *testing.T) {
		h := serveSession(t, &extentSource{fakeSource: newFake(size), extents: alternating}, ss)
		h.send(RequestHeader{Op: request.OpBlockStatus, Cookie: 1, Length: size}, nil)
		hdr, payload := readChunk(t, h)
		if hdr.Type != ReplyTypeBlockStatus || len(payload) != 4+8*maxExtents {
			t.Fatalf("reply %+v with %d bytes, want a block status chunk of %d extents", hdr, len(payload), maxExtents)
		}
		var sum uint64
		for i := 4; i < len(payload); i += 8 {
			sum += uint64(binary.BigEndian.Uint32(payload[i:]))
		}
		if sum != maxExtents*512 {
			t.Errorf("the extents cover %d bytes, want %d", sum, maxExtents*512)
		}
	})
	t.Run("a failing source", func(t *testing.T) {
		h := serveSession(t, &extentSource{fakeSource: newFake(4096), err: fmt.Errorf("fake: %w", syscall.EIO)}, ss)
		h.send(RequestHeader{Op: request.OpBlockStatus, Cookie: 2, Length: 4096}, nil)
		hdr, payload := readChunk(t, h)
		if hdr.Type != ReplyTypeError || binary.BigEndian.Uint32(payload) != errIO {
			t.Errorf("reply %+v [% x], want an ERROR chunk with EIO", hdr, payload)
		}
	})
}

// readChunk reads one structured reply chunk.
func readChunk(t *testing.T, h *harness) (ChunkHeader, []byte) {
	t.Helper()
	var b [ChunkHeaderSize]byte
	h.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(h.client, b[:]); err != nil {
		t.Fatal(err)
	}
	hdr, err := ParseChunkHeader(b[:])
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, hdr.Length)
	if _, err := io.ReadFull(h.client, payload); err != nil {
		t.Fatal(err)
	}
	return hdr, payload
}

// TestStructuredSendFile: a large READ from a file in RAM, sent with
// sendfile, or from the pipes a source filled, gets the OFFSET_DATA chunk
// header before its data.
func TestStructuredSendFile(t *testing.T) {
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 13)
	}
	f, _ := memfdSource(t, data)
	piped := &pipeSource{fakeSource: newFake(len(data))}
	for _, tc := range []struct {
		name string
		src  sources.Source
		data []byte
	}{
		{"sendfile", f, data},
		{"pipes", piped, piped.data},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := serveSession(t, tc.src, Session{StructuredReplies: true})
			const off, n = 64 << 10, 512 << 10
			h.send(RequestHeader{Op: request.OpRead, Cookie: 77, Offset: off, Length: n}, nil)
			hdr, payload := readChunk(t, h)
			if hdr != (ChunkHeader{Flags: ReplyFlagDone, Type: ReplyTypeOffsetData, Cookie: 77, Length: 8 + n}) {
				t.Fatalf("chunk header %+v", hdr)
			}
			if binary.BigEndian.Uint64(payload) != off || !bytes.Equal(payload[8:], tc.data[off:off+n]) {
				t.Errorf("the chunk's offset is %d or its data differ", binary.BigEndian.Uint64(payload))
			}
		})
	}
	// The pipes are given back once written, perhaps after the client read them.
	for end := time.Now().Add(5 * time.Second); piped.given.Load() == 0 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if piped.served.Load() != 1 || piped.given.Load() != 1 {
		t.Errorf("pipes: %d filled, %d given back; want 1 and 1", piped.served.Load(), piped.given.Load())
	}
}
