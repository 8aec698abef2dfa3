package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/nbdtest"
	"github.com/nbdloop/nbdloop/internal/request"
)

// fuzzScript is what the client asks in FuzzClient and in the captures
// that seed it: every request in flight at once, sent in this order (so
// with cookies 1, 2, ...).
var fuzzScript = []struct {
	op       request.Op
	off, len int64
}{
	{request.OpRead, 0, 4096},
	{request.OpWrite, 4096, 4096},
	{request.OpFlush, 0, 0},
	{request.OpTrim, 8192, 4096},
	{request.OpZero, 12288, 4096},
	{request.OpRead, 512, 512},
}

// fuzzInfo is the export FuzzClient's transmission phase runs against.
var fuzzInfo = ExportInfo{Size: 1 << 20, Flags: FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes,
	MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload}

// scriptConn is a connection that counts the request headers written to
// it, so that the script can send its requests in a fixed order, and
// that, when fake, plays back a server's bytes: the replies only once
// every request of the script is in flight, so that no reply comes before
// its request.
type scriptConn struct {
	net.Conn // the real connection, or nil for a fake

	mu       sync.Mutex
	cond     *sync.Cond
	requests int
	closed   bool
	in       []byte // a fake's server bytes
	gated    bool   // a fake's replies wait for the whole script
	record   *bytes.Buffer
}

func newScriptConn(real net.Conn, in []byte) *scriptConn {
	s := &scriptConn{Conn: real, in: in}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *scriptConn) Write(p []byte) (int, error) {
	s.mu.Lock()
	if len(p) == RequestSize && binary.BigEndian.Uint32(p) == requestMagic || len(p) == ExtRequestSize && binary.BigEndian.Uint32(p) == extendedRequestMagic {
		s.requests++
		s.cond.Broadcast()
	}
	closed := s.closed
	s.mu.Unlock()
	if s.Conn != nil {
		return s.Conn.Write(p)
	}
	if closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

func (s *scriptConn) Read(p []byte) (int, error) {
	if s.Conn != nil {
		n, err := s.Conn.Read(p)
		s.mu.Lock()
		if s.record != nil {
			s.record.Write(p[:n])
		}
		s.mu.Unlock()
		return n, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.gated && s.requests < len(fuzzScript) && !s.closed {
		s.cond.Wait()
	}
	switch {
	case s.closed:
		return 0, net.ErrClosed
	case len(s.in) == 0:
		return 0, io.EOF
	}
	n := copy(p, s.in)
	s.in = s.in[n:]
	return n, nil
}

func (s *scriptConn) Close() error {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	if s.Conn != nil {
		return s.Conn.Close()
	}
	return nil
}

func (s *scriptConn) SetDeadline(t time.Time) error {
	if s.Conn != nil {
		return s.Conn.SetDeadline(t)
	}
	return nil
}

func (s *scriptConn) SetWriteDeadline(t time.Time) error {
	if s.Conn != nil {
		return s.Conn.SetWriteDeadline(t)
	}
	return nil
}

// waitRequests waits until n request headers have been written, or the
// connection is closed.
func (s *scriptConn) waitRequests(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.requests < n && !s.closed {
		s.cond.Wait()
	}
}

// runScript sends fuzzScript's requests on c, in order, all in flight at
// once, and returns their errors.
func runScript(c *Client, sc *scriptConn) []error {
	errs := make([]error, len(fuzzScript))
	var wg sync.WaitGroup
	for i, r := range fuzzScript {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, r.len)
			switch r.op {
			case request.OpRead:
				errs[i] = c.Read(p, r.off)
			case request.OpWrite:
				for j := range p {
					p[j] = byte(j)
				}
				errs[i] = c.Write(p, r.off, false)
			case request.OpFlush:
				errs[i] = c.Flush()
			case request.OpTrim:
				errs[i] = c.Trim(r.off, r.len)
			case request.OpZero:
				errs[i] = c.WriteZeroes(r.off, r.len, false)
			}
		}()
		sc.waitRequests(i + 1)
	}
	wg.Wait()
	return errs
}

// serverCapture is what one server sent: the handshake's bytes, the
// transmission phase's, and whether it agreed to extended headers.
type serverCapture struct {
	hs, tx []byte
	ext    bool
}

// captureServers runs the script against NBD servers nbdloop did not
// write (and its own) and returns, per server, the bytes it sent in the
// handshake and in the transmission phase. Every request must succeed:
// the capture is a compatibility test too.
func captureServers(t testing.TB) map[string]serverCapture {
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var servers []*nbdtest.Server
	for _, start := range []func() *nbdtest.Server{
		func() *nbdtest.Server { return nbdtest.Nbdkit(t, "memory", "1M") },
		func() *nbdtest.Server { return nbdtest.QemuNBD(t, file) },
		func() *nbdtest.Server { return nbdtest.NBDServer(t, file) },
	} {
		servers = append(servers, start())
	}
	out := map[string]serverCapture{}
	capture := func(name string, conn net.Conn, export string) {
		sc := newScriptConn(conn, nil)
		sc.record = &bytes.Buffer{}
		info, err := clientHandshake(sc, export, nil, true)
		if err != nil {
			t.Fatalf("%s: handshake: %v", name, err)
		}
		sc.mu.Lock()
		hs := bytes.Clone(sc.record.Bytes())
		sc.record.Reset()
		sc.mu.Unlock()
		t.Logf("%s: %+v", name, info)
		info.Flags |= fuzzInfo.Flags // the requests go out whatever the server offers
		c := newClient(sc, info)
		for i, err := range runScript(c, sc) {
			if err != nil {
				t.Errorf("%s: %v: %v", name, fuzzScript[i].op, err)
			}
		}
		c.Close()
		sc.mu.Lock()
		out[name] = serverCapture{hs, bytes.Clone(sc.record.Bytes()), info.ExtendedHeaders}
		sc.mu.Unlock()
	}
	for _, s := range servers {
		conn, err := net.Dial("unix", s.Socket)
		if err != nil {
			t.Fatal(err)
		}
		export := ""
		if s.Name == "nbd-server" {
			export = "disk"
		}
		capture(s.Name, conn, export)
	}
	own := serveOne(t, clientExports{"": memoryExport(t, "", 1<<20, false, 0)})
	capture("nbdloop", own, "")
	return out
}

// FuzzClient feeds a server's bytes to the client: the first argument to
// the handshake, the second to the transmission phase of fuzzScript, with
// extended headers when the third is set. The client must neither panic
// nor hang, and every request must end with success, a server's error
// (ReplyError) or a lost connection (ErrConnLost). Seeds: what real
// servers sent, and some hostile replies.
func FuzzClient(f *testing.F) {
	if !fuzzWorker() {
		for _, s := range captureServers(f) {
			f.Add(s.hs, s.tx, s.ext)
		}
	}
	reply := func(errno uint32, cookie uint64, data int) []byte {
		b := binary.BigEndian.AppendUint32(nil, replyMagic)
		b = binary.BigEndian.AppendUint32(b, errno)
		b = binary.BigEndian.AppendUint64(b, cookie)
		return append(b, make([]byte, data)...)
	}
	f.Add(greetingWith(0), cat(reply(0, 6, 512), reply(5, 1, 0), reply(0, 2, 0), reply(1, 3, 0), reply(0, 4, 0), reply(0, 5, 0)), false)
	f.Add(greetingWith(3), cat(reply(0, 9, 0)), false)
	f.Add([]byte("NBDMAGIC"), cat(reply(0, 1, 4000)), false)
	// A handshake with extended headers and base:allocation agreed, as
	// nbdloop's server answers.
	extHS := cat(greetingWith(3), optReplyBytes(optExtendedHeaders, repAck),
		appendMetaContext(nil, optSetMetaContext, 1, baseAllocation), optReplyBytes(optSetMetaContext, repAck),
		appendInfoExport(nil, optGo, 1<<20, FlagHasFlags), appendInfoBlockSize(nil, optGo, 1, 4096, MaxPayload), optReplyBytes(optGo, repAck))
	for _, s := range extendedReplySeeds() {
		f.Add(extHS, s, true)
	}
	f.Fuzz(func(t *testing.T, hs, replies []byte, ext bool) {
		sc := newScriptConn(nil, hs)
		if info, err := clientHandshake(sc, "x", nil, ext); err == nil {
			if info.Size < 0 || info.MinBlock == 0 || info.MaxPayload < info.MinBlock || info.MaxPayload > MaxPayload || info.MaxPayload%info.MinBlock != 0 {
				t.Fatalf("handshake gave %+v", info)
			}
		}
		sc = newScriptConn(nil, replies)
		sc.gated = true
		info := fuzzInfo
		info.ExtendedHeaders = ext
		c := newClient(sc, info)
		done := make(chan []error)
		go func() { done <- runScript(c, sc) }()
		var errs []error
		select {
		case errs = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the script did not end")
		}
		c.Close()
		for i, err := range errs {
			var re *ReplyError
			if err != nil && !errors.As(err, &re) && !errors.Is(err, ErrConnLost) {
				t.Errorf("%v: %v, want nil, a ReplyError or ErrConnLost", fuzzScript[i].op, err)
			}
		}
	})
}

// TestCaptureServers runs the capture alone, as a compatibility test of
// the client with each server, outside the fuzzer.
func TestCaptureServers(t *testing.T) {
	got := captureServers(t)
	for _, name := range []string{"nbdkit", "qemu-nbd", "nbd-server", "nbdloop"} {
		// Every reply is there, and the data of both READs, but from
		// nbdloop, whose memory export's zeros come as hole chunks.
		least := 6*ReplySize + 4096 + 512
		if name == "nbdloop" {
			least = 6*ExtChunkHeaderSize + 2*12
		}
		s, ok := got[name]
		if !ok || len(s.hs) < 18 || len(s.tx) < least {
			t.Errorf("%s: captured %d handshake and %d transmission bytes", name, len(s.hs), len(s.tx))
		}
		// Debian 12's servers do not know extended headers; nbdloop
		// agrees to them.
		if s.ext != (name == "nbdloop") {
			t.Errorf("%s: extended headers agreed: %v", name, s.ext)
		}
	}
}

// extChunk encodes an extended reply chunk with payload.
func extChunk(flags, typ uint16, cookie, off uint64, payload ...[]byte) []byte {
	p := cat(payload...)
	b := make([]byte, ExtChunkHeaderSize)
	PutExtChunkHeader(b, ExtChunkHeader{Flags: flags, Type: typ, Cookie: cookie, Offset: off, Length: uint64(len(p))})
	return append(b, p...)
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// optReplyBytes is an option reply without data.
func optReplyBytes(opt, typ uint32) []byte { return appendOptReply(nil, opt, typ) }

// extendedReplySeeds are transmission phases of fuzzScript with extended
// headers: well-formed (data and hole chunks, out of order, errors) and
// hostile (extreme lengths and offsets, lies about coverage).
func extendedReplySeeds() [][]byte {
	done := uint16(ReplyFlagDone)
	none := func(cookie, off uint64) []byte { return extChunk(done, ReplyTypeNone, cookie, off) }
	rest := cat(none(2, 4096), none(3, 0), none(4, 8192), none(5, 12288))
	return [][]byte{
		// READ 1 as a hole and data out of order, READ 6 in one data
		// chunk, the others done.
		cat(extChunk(0, ReplyTypeOffsetData, 1, 0, be64(2048), make([]byte, 2048)),
			extChunk(done, ReplyTypeOffsetHole, 1, 0, be64(0), be32(2048)), rest,
			extChunk(done, ReplyTypeOffsetData, 6, 512, be64(512), make([]byte, 512))),
		// Errors: with an offset, without, with a message.
		cat(extChunk(done, ReplyTypeErrorOffset, 1, 0, be32(5), []byte{0, 2}, []byte("no"), be64(100)),
			extChunk(done, ReplyTypeError, 2, 4096, be32(28), []byte{0, 0}), rest[ExtChunkHeaderSize:],
			extChunk(done, ReplyTypeError, 6, 512, be32(1<<31), []byte{0xff, 0xff})),
		// Extreme lengths and offsets.
		cat(extChunk(done, ReplyTypeOffsetData, 1, 0, be64(1<<64-8))[:ExtChunkHeaderSize-8], be64(1<<64-1)),
		cat(extChunk(done, ReplyTypeOffsetHole, 1, 0, be64(1<<64-1), be32(1<<32-1))),
		cat(extChunk(done, ReplyTypeOffsetHole, 1, 0, be64(0), be32(0))),
		cat(extChunk(done, ReplyTypeOffsetHole, 1, 0, be64(0), be32(4096)), extChunk(done, ReplyTypeNone, 2, 1<<63)),
		// A READ said done with half of it covered; chunks twice over.
		cat(extChunk(done, ReplyTypeOffsetHole, 1, 0, be64(0), be32(2048))),
		cat(extChunk(0, ReplyTypeOffsetHole, 1, 0, be64(0), be32(4096)), extChunk(done, ReplyTypeOffsetHole, 1, 0, be64(0), be32(4096))),
		// A simple reply, a structured one, an unknown type, block
		// status where none was asked.
		cat(reply16(0, 1)),
		cat(extChunk(done, ReplyTypeBlockStatusExt, 3, 0, be32(1), be32(1), be64(4096), be64(3))),
		cat(extChunk(done, 77, 3, 0)),
	}
}

// reply16 is a simple reply header.
func reply16(errno uint32, cookie uint64) []byte {
	b := make([]byte, ReplySize)
	PutReply(b, errno, cookie)
	return b
}
