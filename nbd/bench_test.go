package nbd

import (
	"io"
	"testing"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// benchmarkServer drives the server with a pipelined client (queue depth 32)
// over a socketpair, as the kernel does, and reports allocations per request.
func benchmarkServer(b *testing.B, op request.Op, size int) {
	benchmarkServerOpts(b, op, size, Options{}, false)
}

// benchmarkInline is benchmarkServer for an InMemory source, which the
// reading goroutine serves itself.
func benchmarkInline(b *testing.B, op request.Op, size int) {
	benchmarkServerOpts(b, op, size, Options{}, true)
}

func benchmarkServerOpts(b *testing.B, op request.Op, size int, opts Options, inMemory bool) {
	f := newFake(64 << 20)
	f.caps.InMemory = inMemory
	benchmarkSource(b, f, op, size, opts)
}

func benchmarkSource(b *testing.B, src sources.Source, op request.Op, size int, opts Options) {
	h := serve(b, src, opts)
	const depth = 32
	frame := make([]byte, RequestSize+size)
	replyLen := ReplySize
	if op == request.OpRead {
		frame = frame[:RequestSize]
		replyLen += size
	}
	reply := make([]byte, replyLen)
	slots := (64 << 20) / size
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	// inflight holds one token per request sent and not yet answered, as
	// the kernel's tag set does.
	inflight := make(chan struct{}, depth)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < b.N; i++ {
			if _, err := io.ReadFull(h.client, reply); err != nil {
				b.Error(err)
				return
			}
			<-inflight
		}
	}()
	for i := 0; i < b.N; i++ {
		inflight <- struct{}{}
		PutRequest(frame, RequestHeader{Op: op, Cookie: uint64(i), Offset: uint64(i%slots) * uint64(size), Length: uint64(size)})
		if _, err := h.client.Write(frame); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}

func BenchmarkServerRead4K(b *testing.B)  { benchmarkServer(b, request.OpRead, 4096) }
func BenchmarkServerWrite4K(b *testing.B) { benchmarkServer(b, request.OpWrite, 4096) }
func BenchmarkServerRead1M(b *testing.B)  { benchmarkServer(b, request.OpRead, 1<<20) }

func BenchmarkServerInlineRead4K(b *testing.B)  { benchmarkInline(b, request.OpRead, 4096) }
func BenchmarkServerInlineWrite4K(b *testing.B) { benchmarkInline(b, request.OpWrite, 4096) }
func BenchmarkServerInlineRead1M(b *testing.B)  { benchmarkInline(b, request.OpRead, 1<<20) }

// BenchmarkServerSendFile1M reads 1 MiB from a memfd source: the replies'
// data go out with sendfile.
func BenchmarkServerSendFile1M(b *testing.B) {
	f, _ := memfdSource(b, make([]byte, 64<<20))
	benchmarkSource(b, f, request.OpRead, 1<<20, Options{})
}

// FuzzRequest checks that every request header that parses, compact or
// extended, encodes back to the same bytes.
func FuzzRequest(f *testing.F) {
	seed := make([]byte, RequestSize)
	PutRequest(seed, RequestHeader{Op: request.OpWrite, Flags: request.FlagFUA, Cookie: 0x0102030405060708, Offset: 1 << 40, Length: 4096})
	f.Add(seed)
	f.Add(make([]byte, RequestSize))
	for _, r := range []RequestHeader{
		{Op: request.OpWrite, Flags: request.FlagFUA | request.FlagPayloadLen, Cookie: 1<<64 - 1, Offset: 1<<64 - 1, Length: MaxPayload + 1},
		{Op: request.OpTrim, Offset: 1 << 63, Length: 1<<64 - 1},
		{Op: request.OpBlockStatus, Flags: request.FlagReqOne, Length: 1 << 32},
		{Op: 0xffff, Flags: 0xffff},
	} {
		ext := make([]byte, ExtRequestSize)
		PutExtendedRequest(ext, r)
		f.Add(ext)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := ParseRequest(b); err == nil {
			out := make([]byte, RequestSize)
			PutRequest(out, r)
			if string(out) != string(b[:RequestSize]) {
				t.Fatalf("round trip: got %x, want %x", out, b[:RequestSize])
			}
		}
		if r, err := ParseExtendedRequest(b); err == nil {
			out := make([]byte, ExtRequestSize)
			PutExtendedRequest(out, r)
			if string(out) != string(b[:ExtRequestSize]) {
				t.Fatalf("extended round trip: got %x, want %x", out, b[:ExtRequestSize])
			}
		}
	})
}

// BenchmarkServerReadHoles16K reads 16 KiB with structured replies from a
// source of alternating 4 KiB data and hole extents, at queue depth 32:
// each reply is two data chunks and two hole chunks.
func BenchmarkServerReadHoles16K(b *testing.B) {
	const size, n = 4 << 20, 16384
	var layout []sources.Extent
	for off := int64(0); off < size; off += 8192 {
		layout = append(layout, sources.Extent{Off: off, Length: 4096}, sources.Extent{Off: off + 4096, Length: 4096, Kind: sources.ExtentHole})
	}
	src := &extentSource{fakeSource: newFake(size), extents: layout}
	benchmarkStructuredRead(b, src, n, 2*(dataChunkHeaderSize+4096)+2*(ChunkHeaderSize+12))
}

// BenchmarkServerStructuredFileRead4K reads 4 KiB with structured replies
// from a file in RAM that is all data, at queue depth 32: every READ asks
// the file's Extents, which answer from the run of data they found first.
func BenchmarkServerStructuredFileRead4K(b *testing.B) {
	const n = 4096
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = 1
	}
	f, _ := memfdSource(b, data)
	benchmarkStructuredRead(b, f, n, dataChunkHeaderSize+n)
}

// benchmarkStructuredRead reads n bytes at every n-aligned offset of src
// in turn with structured replies, at queue depth 32, and reports
// allocations per request. Every reply must be replyLen bytes long.
func benchmarkStructuredRead(b *testing.B, src sources.Source, n, replyLen int) {
	h := serveSession(b, src, Session{StructuredReplies: true})
	slots := int(src.Size()) / n
	reply := make([]byte, replyLen)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	b.ResetTimer()
	inflight := make(chan struct{}, 32)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < b.N; i++ {
			if _, err := io.ReadFull(h.client, reply); err != nil {
				b.Error(err)
				return
			}
			<-inflight
		}
	}()
	frame := make([]byte, RequestSize)
	for i := 0; i < b.N; i++ {
		inflight <- struct{}{}
		PutRequest(frame, RequestHeader{Op: request.OpRead, Cookie: uint64(i), Offset: uint64(i%slots) * uint64(n), Length: uint64(n)})
		if _, err := h.client.Write(frame); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}
