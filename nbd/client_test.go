package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// clientExports is a map of exports for the client's tests; "" is not an
// alias unless added.
type clientExports map[string]*Export

func (x clientExports) Export(name string) *Export { return x[name] }
func (x clientExports) List() []*Export {
	var l []*Export
	for _, e := range x {
		l = append(l, e)
	}
	return l
}

// connPair returns the two ends of an AF_UNIX stream socketpair as
// net.Conns.
func connPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

// memoryExport returns an export of a new Memory of size bytes.
func memoryExport(t testing.TB, name string, size int64, readOnly bool, minBlock uint32) *Export {
	m, err := sources.NewMemory(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var src sources.Source = m
	if readOnly {
		src = roSource{m}
	}
	return &Export{Name: name, Description: "test export " + name, Server: NewServer(src, Options{}), ReadOnly: readOnly, MinBlockSize: minBlock}
}

type roSource struct{ *sources.Memory }

func (m roSource) Caps() sources.Caps               { return sources.Caps{ReadOnly: true, Parallel: true} }
func (roSource) WriteAt([]byte, int64) (int, error) { return 0, sources.ErrReadOnly }
func (roSource) Trim(int64, int64) error            { return sources.ErrReadOnly }
func (roSource) Zero(int64, int64, bool) error      { return sources.ErrReadOnly }

// serveOne runs nbd's own server for one client on a socketpair and
// returns the client's end.
func serveOne(t testing.TB, x Exports) net.Conn {
	t.Helper()
	srv, cli := connPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer srv.Close()
		sess, err := Handshake(ctx, srv, x, HandshakeOptions{})
		if err == nil {
			sess.Serve(ctx, srv, 0)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cli
}

func dialOwn(t *testing.T, x Exports, name string) (*Client, error) {
	t.Helper()
	return dialOwnWith(t, x, ClientOptions{Export: name})
}

func dialOwnWith(t *testing.T, x Exports, opts ClientOptions) (*Client, error) {
	t.Helper()
	c, err := NewClient(context.Background(), serveOne(t, x), opts)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestClientAgainstOwnServer(t *testing.T) {
	x := clientExports{
		"disk":  memoryExport(t, "disk", 1<<20, false, 0),
		"ro":    memoryExport(t, "ro", 64<<10, true, 512),
		"big":   memoryExport(t, "big", 1<<40, false, 4096),
		"":      memoryExport(t, "default", 8192, false, 0),
		"other": memoryExport(t, "other", 4096, false, 0),
	}
	tests := []struct {
		name    string
		export  string
		compact bool // ClientOptions.CompactHeaders
		want    ExportInfo
	}{
		{name: "writable", export: "disk", want: ExportInfo{Name: "disk", Description: "", Size: 1 << 20,
			Flags: FlagHasFlags | FlagSendTrim | FlagSendWriteZeroes | FlagSendDF | FlagCanMultiConn, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload, ExtendedHeaders: true, BaseAllocation: true, MetaContextID: 1}},
		{name: "read-only", export: "ro", want: ExportInfo{Name: "ro", Size: 64 << 10,
			Flags: FlagHasFlags | FlagReadOnly | FlagSendDF | FlagCanMultiConn, MinBlock: 512, PreferredBlock: 4096, MaxPayload: MaxPayload, ExtendedHeaders: true, BaseAllocation: true, MetaContextID: 1}},
		{name: "large, 4 KiB blocks", export: "big", want: ExportInfo{Name: "big", Size: 1 << 40,
			Flags: FlagHasFlags | FlagSendTrim | FlagSendWriteZeroes | FlagSendDF | FlagCanMultiConn, MinBlock: 4096, PreferredBlock: 4096, MaxPayload: MaxPayload, ExtendedHeaders: true, BaseAllocation: true, MetaContextID: 1}},
		{name: "default export", export: "", want: ExportInfo{Name: "", Size: 8192,
			Flags: FlagHasFlags | FlagSendTrim | FlagSendWriteZeroes | FlagSendDF | FlagCanMultiConn, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload, ExtendedHeaders: true, BaseAllocation: true, MetaContextID: 1}},
		{name: "compact headers", export: "disk", compact: true, want: ExportInfo{Name: "disk", Description: "", Size: 1 << 20,
			Flags: FlagHasFlags | FlagSendTrim | FlagSendWriteZeroes | FlagCanMultiConn, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialOwnWith(t, x, ClientOptions{Export: tt.export, CompactHeaders: tt.compact})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Info(); got != tt.want {
				t.Errorf("Info() = %+v, want %+v", got, tt.want)
			}
		})
	}

	for _, compact := range []bool{false, true} {
		t.Run(fmt.Sprintf("round trip, compact headers %v", compact), func(t *testing.T) {
			testRoundTrip(t, x, compact)
		})
	}
	testPipelined(t, x)
	testRefusals(t, x)
}

// testRoundTrip writes, zeroes and trims the export "disk" of x and reads
// every step back.
func testRoundTrip(t *testing.T, x Exports, compact bool) {
	{
		c, err := dialOwnWith(t, x, ClientOptions{Export: "disk", CompactHeaders: compact})
		if err != nil {
			t.Fatal(err)
		}
		p := bytes.Repeat([]byte("nbdloop!"), 512)
		steps := []struct {
			name string
			do   func() error
			off  int64
			want []byte
		}{
			{name: "write", do: func() error { return c.Write(p, 4096, false) }, off: 4096, want: p},
			{name: "write fua", do: func() error { return c.Write(p[:100], 3, true) }, off: 3, want: p[:100]},
			{name: "flush", do: c.Flush, off: 4096, want: p},
			{name: "zero, no hole", do: func() error { return c.WriteZeroes(4096, 1000, false) }, off: 4096, want: append(make([]byte, 1000), p[1000:]...)},
			{name: "zero, may trim", do: func() error { return c.WriteZeroes(5096, 3096, true) }, off: 4096, want: make([]byte, 4096)},
			{name: "trim", do: func() error { return c.Trim(0, 4096) }, off: 200, want: nil},
		}
		for _, s := range steps {
			if err := s.do(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			if s.want == nil {
				continue
			}
			got := make([]byte, len(s.want))
			if err := c.Read(got, s.off); err != nil {
				t.Fatalf("%s: read: %v", s.name, err)
			}
			if !bytes.Equal(got, s.want) {
				t.Fatalf("%s: read back differs", s.name)
			}
		}
	}
}

// testPipelined runs 16 goroutines of writes and reads on one client.
func testPipelined(t *testing.T, x Exports) {
	t.Run("pipelined", func(t *testing.T) {
		c, err := dialOwn(t, x, "disk")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), 1))
				base := int64(g) * 64 << 10
				for i := range 50 {
					n := 1 + r.IntN(8192)
					off := base + r.Int64N(64<<10-int64(n))
					p := make([]byte, n)
					for j := range p {
						p[j] = byte(g + i + j)
					}
					if err := c.Write(p, off, false); err != nil {
						errs <- err
						return
					}
					got := make([]byte, n)
					if err := c.Read(got, off); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(got, p) {
						errs <- fmt.Errorf("goroutine %d: request %d read back differs", g, i)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// testRefusals checks the requests the client refuses to send.
func testRefusals(t *testing.T, x Exports) {
	refusals := []struct {
		name    string
		export  string
		compact bool
		do      func(c *Client) error
		want    string
	}{
		{name: "write to read-only", export: "ro", do: func(c *Client) error { return c.Write(make([]byte, 512), 0, false) }, want: "nbd: request not sent: write to a read-only export"},
		{name: "past the end", export: "disk", do: func(c *Client) error { return c.Read(make([]byte, 2), 1<<20-1) }, want: "nbd: request not sent: read of 2 bytes at 1048575 is outside the export (1048576 bytes)"},
		{name: "negative offset", export: "disk", do: func(c *Client) error { return c.Trim(-1, 1) }, want: "outside the export"},
		{name: "misaligned", export: "ro", do: func(c *Client) error { return c.Read(make([]byte, 512), 256) }, want: "not aligned to the server's 512-byte blocks"},
		{name: "over the payload limit", export: "big", do: func(c *Client) error { return c.Read(make([]byte, MaxPayload+4096), 0) }, want: "over the limit"},
		{name: "trim of 4 GiB, compact headers", export: "big", compact: true, do: func(c *Client) error { return c.Trim(0, 1<<32) }, want: "over the limit"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialOwnWith(t, x, ClientOptions{Export: tt.export, CompactHeaders: tt.compact})
			if err != nil {
				t.Fatal(err)
			}
			err = tt.do(c)
			if !errors.Is(err, ErrBadRequest) || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Errorf("got %v, want ErrBadRequest containing %q", err, tt.want)
			}
			// The connection is still usable.
			if err := c.Read(make([]byte, 4096), 0); err != nil {
				t.Errorf("read after the refusal: %v", err)
			}
		})
	}

	t.Run("unknown export", func(t *testing.T) {
		_, err := dialOwn(t, x, "nope")
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Type != repErrUnknown {
			t.Fatalf("got %v, want an OptionError NBD_REP_ERR_UNKNOWN", err)
		}
		if want := `nbd: the server refused export "nope": NBD_REP_ERR_UNKNOWN (no such export): no export "nope"`; err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	})

	t.Run("close sends DISC", func(t *testing.T) {
		m := memoryExport(t, "d", 4096, false, 0)
		c, err := dialOwn(t, clientExports{"d": m}, "d")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !m.Server.Disconnected() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if !m.Server.Disconnected() {
			t.Error("the server got no NBD_CMD_DISC")
		}
		if err := c.Read(make([]byte, 1), 0); !errors.Is(err, ErrClientClosed) {
			t.Errorf("read after Close: %v, want ErrClientClosed", err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// TestClientExtendedHeaders: with extended headers, trims and zeroes of
// more than 4 GiB go out in one request each, and do what they say.
func TestClientExtendedHeaders(t *testing.T) {
	x := clientExports{"big": memoryExport(t, "big", 1<<40, false, 4096)}
	c, err := dialOwn(t, x, "big")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Info().ExtendedHeaders {
		t.Fatal("extended headers not agreed")
	}
	p := bytes.Repeat([]byte{0xa5}, 4096)
	at := []int64{0, 1<<32 - 4096, 1 << 32, 1<<35 - 4096, 1<<40 - 4096}
	steps := []struct {
		name string
		do   func() error
		want []bool // per offset of at: still holds p
	}{
		{"trim 32 GiB", func() error { return c.Trim(0, 1<<35) }, []bool{false, false, false, false, true}},
		{"zero 5 GiB from 4 GiB - 4 KiB", func() error { return c.WriteZeroes(1<<32-4096, 5<<30, true) }, []bool{true, false, false, true, true}},
		{"zero the whole TiB, no hole", func() error { return c.WriteZeroes(0, 1<<40, false) }, []bool{false, false, false, false, false}},
	}
	for _, s := range steps {
		for _, off := range at {
			if err := c.Write(p, off, false); err != nil {
				t.Fatalf("%s: write at %d: %v", s.name, off, err)
			}
		}
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for i, off := range at {
			got := make([]byte, 4096)
			if err := c.Read(got, off); err != nil {
				t.Fatalf("%s: read at %d: %v", s.name, off, err)
			}
			if bytes.Equal(got, p) != s.want[i] {
				t.Errorf("%s: at %d the data is still there: %v, want %v", s.name, off, !s.want[i], s.want[i])
			}
		}
	}
}

// scriptedServer runs fn as the server on the other end of a new
// connection and returns the client's end.
func scriptedServer(t *testing.T, fn func(s net.Conn)) net.Conn {
	t.Helper()
	srv, cli := connPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer srv.Close()
		fn(srv)
	}()
	t.Cleanup(func() {
		cli.Close()
		<-done
	})
	return cli
}

// readN reads n bytes from r, or returns what it could.
func readN(r io.Reader, n int) []byte {
	b := make([]byte, n)
	m, _ := io.ReadFull(r, b)
	return b[:m]
}

func optReply(opt, typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, optReplyMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func infoExportData(size uint64, flags uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, infoExport)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint16(b, flags)
}

func blockSizeData(lo, pref, hi uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, lo)
	b = binary.BigEndian.AppendUint32(b, pref)
	return binary.BigEndian.AppendUint32(b, hi)
}

func greetingWith(flags uint16) []byte {
	b := binary.BigEndian.AppendUint64(nil, nbdMagic)
	b = binary.BigEndian.AppendUint64(b, optMagic)
	return binary.BigEndian.AppendUint16(b, flags)
}

// TestClientHandshakeScripted holds the client's handshake against servers
// written byte by byte: old ones, odd ones, and ones that break the
// protocol.
func TestClientHandshakeScripted(t *testing.T) {
	goOpt := func(name string) []byte {
		d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		d = append(d, name...)
		d = binary.BigEndian.AppendUint16(d, 1)
		d = binary.BigEndian.AppendUint16(d, infoBlockSize)
		return appendOption(nil, optGo, d)
	}
	exportNameReply := func(size uint64, flags uint16, zeroes bool) []byte {
		b := binary.BigEndian.AppendUint64(nil, size)
		b = binary.BigEndian.AppendUint16(b, flags)
		if zeroes {
			b = append(b, make([]byte, 124)...)
		}
		return b
	}
	both := uint16(handshakeFixedNewstyle | handshakeNoZeroes)
	extOpt := appendOption(nil, optExtendedHeaders, nil)
	setMeta := func(name string) []byte { return appendOption(nil, optSetMetaContext, metaData(name, baseAllocation)) }
	tests := []struct {
		name string
		// sent is what the client must send; then the server answers.
		steps   [][2][]byte // {expect from client, reply}
		ext     bool        // ask for extended headers
		want    ExportInfo
		wantErr string
	}{
		{
			name: "extended headers agreed",
			ext:  true,
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{extOpt, optReply(optExtendedHeaders, repAck, nil)},
				{setMeta("x"), cat(optReply(optSetMetaContext, repMetaContext, append([]byte{0, 0, 0, 7}, "qemu:dirty-bitmap:x"...)),
					optReply(optSetMetaContext, repMetaContext, append([]byte{0, 0, 0, 9}, baseAllocation...)), optReply(optSetMetaContext, repAck, nil))},
				{goOpt("x"), cat(optReply(optGo, repInfo, infoExportData(1<<40, FlagHasFlags)), optReply(optGo, repAck, nil))},
			},
			want: ExportInfo{Name: "x", Size: 1 << 40, Flags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload, ExtendedHeaders: true, BaseAllocation: true, MetaContextID: 9},
		},
		{
			name: "extended headers agreed, base:allocation refused",
			ext:  true,
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{extOpt, optReply(optExtendedHeaders, repAck, nil)},
				{setMeta("x"), optReply(optSetMetaContext, repErrUnsup, nil)},
				{goOpt("x"), cat(optReply(optGo, repInfo, infoExportData(4096, FlagHasFlags)), optReply(optGo, repAck, nil))},
			},
			want: ExportInfo{Name: "x", Size: 4096, Flags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload, ExtendedHeaders: true},
		},
		{
			name: "extended headers unknown to the server: compact",
			ext:  true,
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{extOpt, optReply(optExtendedHeaders, repErrUnsup, []byte("what?"))},
				{goOpt("x"), cat(optReply(optGo, repInfo, infoExportData(4096, FlagHasFlags)), optReply(optGo, repAck, nil))},
			},
			want: ExportInfo{Name: "x", Size: 4096, Flags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload},
		},
		{
			name: "extended headers agreed, then GO unsupported",
			ext:  true,
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{extOpt, optReply(optExtendedHeaders, repAck, nil)},
				{setMeta("x"), optReply(optSetMetaContext, repAck, nil)},
				{goOpt("x"), optReply(optGo, repErrUnsup, nil)},
			},
			wantErr: "NBD_OPT_GO refused as unsupported after NBD_OPT_EXTENDED_HEADERS was agreed",
		},
		{
			name: "extended headers acknowledged with data",
			ext:  true,
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{extOpt, optReply(optExtendedHeaders, repAck, []byte{1})},
			},
			wantErr: "reply type 1 with 1 bytes to NBD_OPT_EXTENDED_HEADERS",
		},
		{
			name: "not fixed newstyle: no extended headers asked",
			ext:  true,
			steps: [][2][]byte{
				{nil, greetingWith(handshakeNoZeroes)},
				{cat32(2), nil},
				{appendOption(nil, optExportName, []byte("e")), exportNameReply(512, FlagHasFlags, false)},
			},
			want: ExportInfo{Name: "e", Size: 512, Flags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload, OldStyle: true},
		},
		{
			name: "GO with block sizes and a description",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), bytes.Join([][]byte{
					optReply(optGo, repInfo, infoExportData(1<<30, FlagHasFlags|FlagSendFlush)),
					optReply(optGo, repInfo, blockSizeData(512, 4096, 1<<20)),
					optReply(optGo, repInfo, append([]byte{0, 2}, "a disk"...)),
					optReply(optGo, repInfo, []byte{0, 99, 1, 2, 3}), // unknown: ignored
					optReply(optGo, repAck, nil),
				}, nil)},
			},
			want: ExportInfo{Name: "x", Description: "a disk", Size: 1 << 30, Flags: FlagHasFlags | FlagSendFlush, MinBlock: 512, PreferredBlock: 4096, MaxPayload: 1 << 20},
		},
		{
			name: "max payload unlimited is capped",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), bytes.Join([][]byte{
					optReply(optGo, repInfo, blockSizeData(1, 4096, 0xffffffff)),
					optReply(optGo, repInfo, infoExportData(4096, 0)),
					optReply(optGo, repAck, nil),
				}, nil)},
			},
			want: ExportInfo{Name: "x", Size: 4096, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload},
		},
		{
			name: "GO unsupported: EXPORT_NAME",
			steps: [][2][]byte{
				{nil, greetingWith(handshakeFixedNewstyle)},
				{cat32(1), nil},
				{goOpt("old"), optReply(optGo, repErrUnsup, nil)},
				{appendOption(nil, optExportName, []byte("old")), exportNameReply(8192, FlagHasFlags|FlagReadOnly, true)},
			},
			want: ExportInfo{Name: "old", Size: 8192, Flags: FlagHasFlags | FlagReadOnly, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload, OldStyle: true},
		},
		{
			name: "not fixed newstyle: EXPORT_NAME at once, no zeroes",
			steps: [][2][]byte{
				{nil, greetingWith(handshakeNoZeroes)},
				{cat32(2), nil},
				{appendOption(nil, optExportName, []byte("e")), exportNameReply(512, FlagReadOnly, false)},
			},
			want: ExportInfo{Name: "e", Size: 512, Flags: 0, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload, OldStyle: true},
		},
		{
			name: "EXPORT_NAME refused by closing",
			steps: [][2][]byte{
				{nil, greetingWith(0)},
				{cat32(0), nil},
				{appendOption(nil, optExportName, []byte("e")), nil},
			},
			wantErr: `nbd: the server closed the connection at NBD_OPT_EXPORT_NAME (no export "e"?)`,
		},
		{
			name:    "oldstyle server",
			steps:   [][2][]byte{{nil, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, nbdMagic), oldstyleMagic)}},
			wantErr: "the server speaks the oldstyle handshake",
		},
		{
			name:    "not NBD",
			steps:   [][2][]byte{{nil, []byte("SSH-2.0-OpenSSH_9.2p1 Debian\r\n")}},
			wantErr: "not NBDMAGIC (is it an NBD server?)",
		},
		{
			name: "policy refusal with a message",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), optReply(optGo, 1<<31+2, []byte("go away\x1b[2J"))},
			},
			wantErr: `nbd: the server refused export "x": NBD_REP_ERR_POLICY: go away?[2J`,
		},
		{
			name: "ACK without the export's size",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), optReply(optGo, repAck, nil)},
			},
			wantErr: "NBD_OPT_GO acknowledged without NBD_INFO_EXPORT",
		},
		{
			name: "oversized reply",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), optReply(optGo, repInfo, make([]byte, maxOptReplyData+1))},
			},
			wantErr: "a reply to NBD_OPT_GO with 8193 bytes of data (at most 8192)",
		},
		{
			name: "reply to another option",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), optReply(optList, repAck, nil)},
			},
			wantErr: "a reply to NBD_OPT_LIST where NBD_OPT_GO was asked",
		},
		{
			name: "size over 2^63-1",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), optReply(optGo, repInfo, infoExportData(1<<63, FlagHasFlags))},
			},
			wantErr: "export size 9223372036854775808 is over 2^63-1",
		},
		{
			name: "bad block sizes",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), optReply(optGo, repInfo, blockSizeData(3, 4096, 1<<20))},
			},
			wantErr: "minimum block size 3 is not a power of two up to 64 KiB",
		},
		{
			name: "max payload below preferred",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), optReply(optGo, repInfo, blockSizeData(512, 4096, 1024))},
			},
			wantErr: "maximum payload 1024 is below the preferred block size 4096",
		},
		{
			name: "endless INFO replies",
			steps: [][2][]byte{
				{nil, greetingWith(both)},
				{cat32(3), nil},
				{goOpt("x"), bytes.Repeat(optReply(optGo, repInfo, []byte{0, 99}), maxGoReplies+1)},
			},
			wantErr: "more than 64 replies to NBD_OPT_GO",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mismatch := make(chan string, 1)
			conn := scriptedServer(t, func(s net.Conn) {
				for _, st := range tt.steps {
					if got := readN(s, len(st[0])); !bytes.Equal(got, st[0]) {
						mismatch <- fmt.Sprintf("the client sent [% x], want [% x]", got, st[0])
						return
					}
					s.Write(st[1])
				}
				mismatch <- ""
			})
			c, err := NewClient(context.Background(), conn, ClientOptions{Export: exportOf(tt.steps), HandshakeTimeout: 5 * time.Second, CompactHeaders: !tt.ext})
			if c != nil {
				defer c.Close()
			}
			if tt.wantErr != "" {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.wantErr)) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if got := c.Info(); got != tt.want {
				t.Errorf("Info() = %+v, want %+v", got, tt.want)
			}
			conn.Close()
			if m := <-mismatch; m != "" {
				t.Error(m)
			}
		})
	}
}

// exportOf returns the export name a script's client asks for.
func exportOf(steps [][2][]byte) string {
	for _, st := range steps {
		if len(st[0]) > 16 && binary.BigEndian.Uint64(st[0]) == optMagic {
			switch binary.BigEndian.Uint32(st[0][8:12]) {
			case optExportName:
				return string(st[0][16:])
			case optGo:
				n := binary.BigEndian.Uint32(st[0][16:20])
				return string(st[0][20 : 20+n])
			}
		}
	}
	return ""
}

func cat32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// TestClientHostileReplies sends one READ of 512 bytes at 0 (cookie 1)
// and answers it as each server does: the client must fail the request
// and the connection cleanly, or pass on the server's error.
func TestClientHostileReplies(t *testing.T) {
	reply := func(magic, errno uint32, cookie uint64, data ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, magic)
		b = binary.BigEndian.AppendUint32(b, errno)
		b = binary.BigEndian.AppendUint64(b, cookie)
		return append(b, data...)
	}
	tests := []struct {
		name      string
		answer    []byte
		wantErrno syscall.Errno // a ReplyError with this errno
		wantLost  string        // an ErrConnLost containing this
		alive     bool          // the connection survives
	}{
		{name: "data", answer: reply(replyMagic, 0, 1, make([]byte, 512)...), alive: true},
		{name: "EIO", answer: reply(replyMagic, 5, 1), wantErrno: syscall.EIO, alive: true},
		{name: "ENOSPC", answer: reply(replyMagic, 28, 1), wantErrno: syscall.ENOSPC, alive: true},
		{name: "unknown error value", answer: reply(replyMagic, 1000, 1), wantErrno: syscall.EIO, alive: true},
		{name: "ESHUTDOWN", answer: reply(replyMagic, 108, 1), wantLost: "the server failed read: cannot send after transport endpoint shutdown", alive: true},
		{name: "unknown cookie", answer: reply(replyMagic, 0, 7, make([]byte, 512)...), wantLost: "a reply with cookie 0x7, which no request in flight has"},
		{name: "bad magic", answer: reply(0xdeadbeef, 0, 1), wantLost: "bad reply magic 0xdeadbeef"},
		{name: "structured reply", answer: reply(structuredReplyMagic, 0, 1), wantLost: "a structured reply, which was not negotiated"},
		{name: "short data", answer: reply(replyMagic, 0, 1, make([]byte, 100)...), wantLost: "reading 512 bytes of READ data: unexpected EOF"},
		{name: "short header", answer: []byte{0x67, 0x44}, wantLost: "unexpected EOF"},
		{name: "hang up", answer: nil, wantLost: "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := scriptedServer(t, func(s net.Conn) {
				req := readN(s, RequestSize)
				if h, err := ParseRequest(req); err != nil || h.Op != request.OpRead || h.Cookie != 1 || h.Length != 512 {
					t.Errorf("request %+v, %v", h, err)
				}
				s.Write(tt.answer)
				if tt.alive {
					// Answer a second read, then wait for DISC.
					h, _ := ParseRequest(readN(s, RequestSize))
					s.Write(reply(replyMagic, 0, h.Cookie, make([]byte, 512)...))
					readN(s, RequestSize)
				}
			})
			c := newClient(conn, ExportInfo{Size: 1 << 20, Flags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: MaxPayload})
			defer c.Close()
			err := c.Read(make([]byte, 512), 0)
			var re *ReplyError
			switch {
			case tt.wantLost != "":
				if !errors.Is(err, ErrConnLost) || !bytes.Contains([]byte(err.Error()), []byte(tt.wantLost)) {
					t.Fatalf("got %v, want ErrConnLost containing %q", err, tt.wantLost)
				}
			case tt.wantErrno != 0:
				if !errors.As(err, &re) || !errors.Is(err, tt.wantErrno) {
					t.Fatalf("got %v, want a ReplyError with %v", err, tt.wantErrno)
				}
			case err != nil:
				t.Fatal(err)
			}
			err = c.Read(make([]byte, 512), 0)
			if tt.alive && err != nil {
				t.Errorf("second read: %v", err)
			}
			if !tt.alive && !errors.Is(err, ErrConnLost) {
				t.Errorf("second read: %v, want ErrConnLost", err)
			}
		})
	}
}
