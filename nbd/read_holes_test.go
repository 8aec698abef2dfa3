package nbd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// readReply reads the chunks of one reply, structured or extended, until
// the one flagged DONE, checks every data chunk against want (the source's
// bytes) and every hole against zeros in want, and describes them: "data
// OFF+N", "hole OFF+N", "error CODE", the last with " done".
func readReply(t *testing.T, h *harness, ext bool, want []byte) string {
	t.Helper()
	var out []string
	h.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range 100 {
		var typ, flags uint16
		var n uint64
		b := make([]byte, ChunkHeaderSize)
		if ext {
			b = make([]byte, ExtChunkHeaderSize)
		}
		if _, err := io.ReadFull(h.client, b); err != nil {
			t.Fatal(err)
		}
		if ext {
			hdr, err := ParseExtChunkHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			typ, flags, n = hdr.Type, hdr.Flags, hdr.Length
		} else {
			hdr, err := ParseChunkHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			typ, flags, n = hdr.Type, hdr.Flags, uint64(hdr.Length)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(h.client, p); err != nil {
			t.Fatal(err)
		}
		var s string
		switch typ {
		case ReplyTypeOffsetData:
			off := binary.BigEndian.Uint64(p)
			s = fmt.Sprintf("data %d+%d", off, len(p)-8)
			if !bytes.Equal(p[8:], want[off:off+uint64(len(p)-8)]) {
				t.Errorf("%s: the data differ from the source's", s)
			}
		case ReplyTypeOffsetHole:
			off, size := binary.BigEndian.Uint64(p), binary.BigEndian.Uint32(p[8:])
			s = fmt.Sprintf("hole %d+%d", off, size)
			if !bytes.Equal(want[off:off+uint64(size)], make([]byte, size)) {
				t.Errorf("%s: the source has data there", s)
			}
		default:
			s = fmt.Sprintf("type %d [% x]", typ, p[:min(len(p), 8)])
		}
		if flags&ReplyFlagDone != 0 {
			out = append(out, s+" done")
			return strings.Join(out, ", ")
		}
		out = append(out, s)
	}
	t.Fatal("no chunk flagged DONE")
	return ""
}

// TestReadHoles: a structured or extended READ over ranges the Source
// reports as holes or zeros gets them as NBD_REPLY_TYPE_OFFSET_HOLE
// chunks, the data around them as data chunks, in order, the last one
// flagged DONE; DF, short holes and simple replies keep one data chunk.
func TestReadHoles(t *testing.T) {
	const size = 1 << 20
	layout := []sources.Extent{
		{Off: 0, Length: 4096, Kind: sources.ExtentData},
		{Off: 4096, Length: 4096, Kind: sources.ExtentHole},
		{Off: 8192, Length: 4096, Kind: sources.ExtentZero}, // joins the hole
		{Off: 12288, Length: 4096, Kind: sources.ExtentData},
		{Off: 16384, Length: 256, Kind: sources.ExtentHole}, // too short: data
		{Off: 16640, Length: 65536 - 16640, Kind: sources.ExtentData},
	}
	// From 64 KiB: 1 KiB of data, 1 KiB of hole, and so on, more runs
	// than a reply has chunks.
	for off := int64(65536); off < size; off += 2048 {
		layout = append(layout, sources.Extent{Off: off, Length: 1024}, sources.Extent{Off: off + 1024, Length: 1024, Kind: sources.ExtentHole})
	}
	tests := []struct {
		name      string
		ss        Session
		flags     request.Flags
		off, n    uint64
		want      string
		notSimple bool
	}{
		{name: "data, hole and zeros, data", ss: Session{StructuredReplies: true}, off: 1000, n: 16384 - 1000,
			want: "data 1000+3096, hole 4096+8192, data 12288+4096 done"},
		{name: "all hole", ss: Session{StructuredReplies: true}, off: 4096, n: 8192, want: "hole 4096+8192 done"},
		{name: "a hole under 512 bytes goes as data", ss: Session{StructuredReplies: true}, off: 16000, n: 2000, want: "data 16000+2000 done"},
		{name: "DF: one data chunk", ss: Session{StructuredReplies: true}, flags: request.FlagDF, off: 0, n: 16384, want: "data 0+16384 done"},
		{name: "extended headers", ss: Session{ExtendedHeaders: true}, off: 0, n: 12288, want: "data 0+4096, hole 4096+8192 done"},
		{name: "more runs than chunks: the rest is data", ss: Session{StructuredReplies: true}, off: 65536, n: 65536,
			want: holeRuns(65536, maxReadRuns) + fmt.Sprintf(", data %d+%d done", 65536+(maxReadRuns-1)*1024, 65536-(maxReadRuns-1)*1024)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(size)
			for _, e := range layout {
				if e.Kind != sources.ExtentData {
					clear(f.data[e.Off:e.End()])
				}
			}
			h := serveSession(t, &extentSource{fakeSource: f, extents: layout}, tt.ss)
			r := RequestHeader{Op: request.OpRead, Flags: tt.flags, Cookie: 1, Offset: tt.off, Length: tt.n}
			if tt.ss.ExtendedHeaders {
				h.client.Write(extRequest(r, nil))
			} else {
				h.send(r, nil)
			}
			if got := readReply(t, h, tt.ss.ExtendedHeaders, f.data); got != tt.want {
				t.Errorf("reply: %s\nwant:  %s", got, tt.want)
			}
		})
	}
	t.Run("simple replies: the data, zeros included", func(t *testing.T) {
		f := newFake(size)
		clear(f.data[4096:12288])
		h := serveSession(t, &extentSource{fakeSource: f, extents: layout}, Session{})
		h.send(RequestHeader{Op: request.OpRead, Cookie: 2, Offset: 0, Length: 16384}, nil)
		r, data := h.recv(map[uint64]int{2: 16384})
		if r.Error != 0 || !bytes.Equal(data, f.data[:16384]) {
			t.Errorf("reply %+v, data equal %v", r, bytes.Equal(data, f.data[:16384]))
		}
	})
}

// holeRuns describes n alternating runs of 1 KiB of data and 1 KiB of
// hole from off, the last of which is cut off.
func holeRuns(off uint64, n int) string {
	var s []string
	for i := range n - 1 {
		kind := "data"
		if i%2 == 1 {
			kind = "hole"
		}
		s = append(s, fmt.Sprintf("%s %d+1024", kind, off+uint64(i)*1024))
	}
	return strings.Join(s, ", ")
}
