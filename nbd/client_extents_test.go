package nbd

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// extentsOf collects what c.Extents reports for [off, off+n) as
// "off+length:kind" words, neighbours of a kind merged, checking that
// they are consecutive and cover the range.
func extentsOf(t *testing.T, c *Client, off, n int64) (string, error) {
	t.Helper()
	var exts []sources.Extent
	at := off
	err := c.Extents(off, n, func(e sources.Extent) bool {
		if e.Off != at || e.Length <= 0 {
			t.Errorf("extent %+v, want one from %d", e, at)
		}
		at = e.End()
		if k := len(exts); k > 0 && exts[k-1].Kind == e.Kind {
			exts[k-1].Length += e.Length
		} else {
			exts = append(exts, e)
		}
		return true
	})
	if err == nil && at != off+n {
		t.Errorf("the extents end at %d, want %d", at, off+n)
	}
	var w []string
	for _, e := range exts {
		w = append(w, fmt.Sprintf("%d+%d:%s", e.Off, e.Length, e.Kind))
	}
	return strings.Join(w, " "), err
}

// TestClientExtents: with extended headers the client asks block status of
// nbdloop's server and reports the source's extents, exactly over any
// range (requests widened to the server's blocks, the reply cut back);
// with compact headers, or no base:allocation, everything is data.
func TestClientExtents(t *testing.T) {
	layout := []sources.Extent{
		{Off: 0, Length: 8192, Kind: sources.ExtentData},
		{Off: 8192, Length: 3 << 30, Kind: sources.ExtentHole}, // over 2^32 with the rest
		{Off: 8192 + 3<<30, Length: 2 << 30, Kind: sources.ExtentZero},
		{Off: 8192 + 5<<30, Length: 1<<40 - 8192 - 5<<30, Kind: sources.ExtentData},
	}
	export := func(minBlock uint32) *Export {
		src := &bigSource{&extentSource{fakeSource: newFake(65536), extents: layout}, 1 << 40}
		return &Export{Name: "x", Server: NewServer(src, Options{}), ReadOnly: true, MinBlockSize: minBlock}
	}
	tests := []struct {
		name     string
		minBlock uint32
		compact  bool
		off, n   int64
		want     string
	}{
		{name: "whole export", off: 0, n: 1 << 40,
			want: "0+8192:data 8192+3221225472:hole 3221233664+2147483648:zero 5368717312+1094142910464:data"},
		{name: "inside, unaligned, 4 KiB blocks", minBlock: 4096, off: 100, n: 8192,
			want: "100+8092:data 8192+100:hole"},
		{name: "from the end of the hole", minBlock: 512, off: 3<<30 + 8192 - 1, n: 2,
			want: "3221233663+1:hole 3221233664+1:zero"},
		{name: "compact headers: all data", compact: true, off: 0, n: 1 << 40, want: "0+1099511627776:data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialOwnWith(t, clientExports{"x": export(tt.minBlock)}, ClientOptions{Export: "x", CompactHeaders: tt.compact})
			if err != nil {
				t.Fatal(err)
			}
			if c.Info().BaseAllocation == tt.compact {
				t.Fatalf("base:allocation %v with compact headers %v", c.Info().BaseAllocation, tt.compact)
			}
			got, err := extentsOf(t, c, tt.off, tt.n)
			if err != nil || got != tt.want {
				t.Errorf("Extents = %s, %v\nwant       %s", got, err, tt.want)
			}
		})
	}
}

// TestClientBlockStatusHostile: block status replies that break the
// protocol cost the connection; a reply cut short is asked again from
// where it ended.
func TestClientBlockStatusHostile(t *testing.T) {
	const id = 5
	chunk := func(cookie uint64, ctx, count uint32, descs ...uint64) []byte {
		b := cat(be32(ctx), be32(count))
		for _, d := range descs {
			b = append(b, be64(d)...)
		}
		return extChunk(ReplyFlagDone, ReplyTypeBlockStatusExt, cookie, 0, b)
	}
	tests := []struct {
		name     string
		answer   func(cookie, off uint64) []byte
		want     string // the extents of [0, 8192)
		wantLost string
	}{
		{name: "one reply", answer: func(c, o uint64) []byte { return chunk(c, id, 2, 4096, 3, 1<<20, 0) }, want: "0+4096:hole 4096+4096:data"},
		{name: "short replies, asked again", answer: func(c, o uint64) []byte { return chunk(c, id, 1, 1024, 2) }, want: "0+8192:zero"},
		{name: "another context", answer: func(c, o uint64) []byte { return chunk(c, 6, 1, 4096, 0) }, wantLost: "block status for context 6, not base:allocation's 5"},
		{name: "count that lies", answer: func(c, o uint64) []byte { return chunk(c, id, 2, 4096, 0) }, wantLost: "says 2 descriptors"},
		{name: "empty descriptor", answer: func(c, o uint64) []byte { return chunk(c, id, 1, 0, 0) }, wantLost: "an empty block status descriptor"},
		{name: "no descriptors", answer: func(c, o uint64) []byte {
			return extChunk(ReplyFlagDone, ReplyTypeBlockStatusExt, c, 0, be32(id), be32(0))
		}, wantLost: "a block status chunk of 8 bytes"},
		{name: "compact block status chunk", answer: func(c, o uint64) []byte {
			return extChunk(ReplyFlagDone, ReplyTypeBlockStatus, c, 0, be32(id), be32(4096), be32(0))
		}, wantLost: "a chunk of type 5"},
		{name: "NONE for block status", answer: func(c, o uint64) []byte { return extChunk(ReplyFlagDone, ReplyTypeNone, c, 0) },
			wantLost: "a block status reply without descriptors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := scriptedServer(t, func(s net.Conn) {
				for {
					h, err := ParseExtendedRequest(readN(s, ExtRequestSize))
					if err != nil || h.Op != request.OpBlockStatus {
						return
					}
					a := tt.answer(h.Cookie, h.Offset)
					// The chunk header's offset is the request's.
					PutExtChunkHeader(a, ExtChunkHeader{Flags: ReplyFlagDone, Type: binary16(a[6:8]), Cookie: h.Cookie, Offset: h.Offset, Length: uint64(len(a) - ExtChunkHeaderSize)})
					s.Write(a)
				}
			})
			c := newClient(conn, ExportInfo{Size: 8192, Flags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload,
				ExtendedHeaders: true, BaseAllocation: true, MetaContextID: id})
			defer c.Close()
			got, err := extentsOf(t, c, 0, 8192)
			switch {
			case tt.wantLost != "":
				if !errors.Is(err, ErrConnLost) || !strings.Contains(err.Error(), tt.wantLost) {
					t.Errorf("got %v, want ErrConnLost containing %q", err, tt.wantLost)
				}
			case err != nil || got != tt.want:
				t.Errorf("Extents = %s, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func binary16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }
