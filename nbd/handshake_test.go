package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// testExports is a fixed set of exports; "" is the default, an alias of
// "disk" unless given.
type testExports struct {
	byName map[string]*Export
	list   []*Export
}

func (x testExports) Export(name string) *Export { return x.byName[name] }
func (x testExports) List() []*Export            { return x.list }

// newTestExports serves "disk" (1 MiB, the default export, described) and
// "small" (64 KiB, read-only, minimum block 512), both in memory.
func newTestExports(t testing.TB) testExports {
	mk := func(size int64, ro bool) *Server {
		m, err := sources.NewMemory(size)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		if ro {
			return NewServer(readOnlyMemory{m}, Options{})
		}
		return NewServer(m, Options{})
	}
	disk := &Export{Name: "disk", Description: "a test disk", Server: mk(1<<20, false)}
	small := &Export{Name: "small", Server: mk(64<<10, true), ReadOnly: true, MinBlockSize: 512}
	return testExports{
		byName: map[string]*Export{"": disk, "disk": disk, "small": small},
		list:   []*Export{disk, small},
	}
}

// readOnlyMemory is a Memory that refuses writes, as a read-only export's
// source must.
type readOnlyMemory struct{ *sources.Memory }

func (m readOnlyMemory) Caps() sources.Caps {
	c := m.Memory.Caps()
	c.ReadOnly, c.Trim, c.Zero = true, false, false
	return c
}

func (readOnlyMemory) WriteAt([]byte, int64) (int, error) { return 0, sources.ErrReadOnly }
func (readOnlyMemory) Trim(int64, int64) error            { return sources.ErrReadOnly }
func (readOnlyMemory) Zero(int64, int64, bool) error      { return sources.ErrReadOnly }

// Client side of the handshake, written from the protocol document.

func clientFlags(f uint32) []byte { return binary.BigEndian.AppendUint32(nil, f) }

// option is one option as a client sends it: IHAVEOPT, option, length,
// data.
func option(opt uint32, data ...byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, 0x49484156454f5054)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// goData is the data of NBD_OPT_GO and NBD_OPT_INFO.
func goData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// metaData is the data of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT.
func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// handshakeResult is what one scripted client saw.
type handshakeResult struct {
	exp     *Export
	sess    Session
	err     error
	replies []string // describeReplies of what the server sent after the greeting
	rest    []byte   // bytes after the last option reply (NBD_OPT_EXPORT_NAME's reply)
}

// runHandshake sends script as one client and returns what the server
// answered until Handshake returned.
func runHandshake(t *testing.T, x Exports, script []byte, opts HandshakeOptions) handshakeResult {
	t.Helper()
	srv, cli := socketPair(t)
	go func() {
		cli.Write(script)
		cli.CloseWrite()
	}()
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(cli)
		got <- b
	}()
	sess, err := Handshake(context.Background(), srv, x, opts)
	exp := sess.Export
	srv.Close()
	out := <-got
	cli.Close()
	g := greeting()
	if !bytes.HasPrefix(out, g[:]) {
		t.Fatalf("the server began with [% x], want the greeting [% x]", out[:min(len(out), 18)], g)
	}
	replies, rest, err2 := describeReplies(out[18:])
	if err2 != nil && exp == nil {
		t.Fatalf("replies: %v", err2)
	}
	return handshakeResult{exp: exp, sess: sess, err: err, replies: replies, rest: rest}
}

// socketPair returns the two ends of a connected AF_UNIX stream socket
// pair: unlike net.Pipe, its writes are buffered and it can be
// half-closed, as a client's TCP connection can.
func socketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

var replyTypeNames = map[uint32]string{
	1: "ACK", 2: "SERVER", 3: "INFO", 4: "META_CONTEXT",
	1<<31 + 1: "ERR_UNSUP", 1<<31 + 2: "ERR_POLICY", 1<<31 + 3: "ERR_INVALID", 1<<31 + 6: "ERR_UNKNOWN", 1<<31 + 9: "ERR_TOO_BIG",
	1<<31 + 5: "ERR_TLS_REQD", 1<<31 + 10: "ERR_EXT_HEADER_REQD",
}

// describeReplies decodes option replies from b, as a client reads them,
// into one line each: "OPT TYPE details". It stops at the first bytes that
// are not a reply (the reply to NBD_OPT_EXPORT_NAME) and returns them.
func describeReplies(b []byte) (lines []string, rest []byte, err error) {
	for len(b) >= optReplyHeaderSize && binary.BigEndian.Uint64(b) == 0x0003e889045565a9 {
		opt := binary.BigEndian.Uint32(b[8:])
		typ := binary.BigEndian.Uint32(b[12:])
		n := binary.BigEndian.Uint32(b[16:])
		if uint64(len(b)-20) < uint64(n) {
			return lines, b, fmt.Errorf("reply of %d bytes, %d left", n, len(b)-20)
		}
		data := b[20 : 20+n]
		b = b[20+n:]
		name, ok := replyTypeNames[typ]
		if !ok {
			name = fmt.Sprintf("type%#x", typ)
		}
		line := fmt.Sprintf("%d %s", opt, name)
		switch {
		case typ == repInfo && len(data) >= 2:
			line += describeInfo(binary.BigEndian.Uint16(data), data[2:])
		case typ == repMetaContext && len(data) >= 4:
			line += fmt.Sprintf(" id=%d %q", binary.BigEndian.Uint32(data), data[4:])
		case typ == repServer && len(data) >= 4:
			l := binary.BigEndian.Uint32(data)
			if uint64(l) > uint64(len(data)-4) {
				return lines, b, fmt.Errorf("NBD_REP_SERVER name of %d bytes in %d", l, len(data)-4)
			}
			line += fmt.Sprintf(" %q %q", data[4:4+l], data[4+l:])
		case typ&(1<<31) != 0 && len(data) > 0:
			line += ": " + string(data)
		case len(data) > 0:
			line += fmt.Sprintf(" [% x]", data)
		}
		lines = append(lines, line)
	}
	return lines, b, nil
}

func describeInfo(typ uint16, d []byte) string {
	switch {
	case typ == infoExport && len(d) == 10:
		return fmt.Sprintf(" export size=%d flags=%#x", binary.BigEndian.Uint64(d), binary.BigEndian.Uint16(d[8:]))
	case typ == infoName:
		return fmt.Sprintf(" name %q", d)
	case typ == infoDescription:
		return fmt.Sprintf(" description %q", d)
	case typ == infoBlockSize && len(d) == 12:
		return fmt.Sprintf(" block sizes %d/%d/%d", binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:]), binary.BigEndian.Uint32(d[8:]))
	}
	return fmt.Sprintf(" info %d [% x]", typ, d)
}

// Flags of the test exports: HAS_FLAGS, SEND_TRIM, SEND_WRITE_ZEROES and
// CAN_MULTI_CONN; small is HAS_FLAGS, READ_ONLY and CAN_MULTI_CONN.
const (
	diskFlags  = "0x161"
	smallFlags = "0x103"
	// diskFlagsDF adds SEND_DF, offered with structured replies.
	diskFlagsDF = "0x1e1"
)

func TestHandshake(t *testing.T) {
	const fixedNoZeroes = clientFixedNewstyle | clientNoZeroes
	diskInfo := []string{"7 INFO export size=1048576 flags=" + diskFlags}
	tests := []struct {
		name    string
		script  []byte
		export  string // the export chosen, "" for none
		err     error  // errors.Is, nil for none
		replies []string
		rest    string // hex of the bytes after the replies
		// What the Session says was negotiated.
		structured, alloc, ext bool
	}{
		{
			name:   "GO default export with every info",
			script: cat(clientFlags(fixedNoZeroes), option(optGo, goData("", infoName, infoDescription, infoBlockSize)...)),
			export: "disk",
			replies: append(diskInfo,
				`7 INFO name "disk"`, `7 INFO description "a test disk"`, "7 INFO block sizes 1/4096/33554432", "7 ACK"),
		},
		{
			name:    "GO without info requests still sends block sizes",
			script:  cat(clientFlags(fixedNoZeroes), option(optGo, goData("disk")...)),
			export:  "disk",
			replies: append(diskInfo, "7 INFO block sizes 1/4096/33554432", "7 ACK"),
		},
		{
			name: "INFO then GO of a read-only export with a 512-byte minimum",
			script: cat(clientFlags(clientFixedNewstyle), option(optInfo, goData("small", infoBlockSize)...),
				option(optGo, goData("small", infoBlockSize, infoDescription)...)),
			export: "small",
			replies: []string{
				"6 INFO export size=65536 flags=" + smallFlags, "6 INFO block sizes 512/4096/33554432", "6 ACK",
				"7 INFO export size=65536 flags=" + smallFlags, "7 INFO block sizes 512/4096/33554432", "7 ACK",
			},
		},
		{
			name:    "unknown export, then abort",
			script:  cat(clientFlags(fixedNoZeroes), option(optGo, goData("nope")...), option(optAbort)),
			err:     ErrAborted,
			replies: []string{`7 ERR_UNKNOWN: no export "nope"`, "2 ACK"},
		},
		{
			name:    "abort with data is still acknowledged",
			script:  cat(clientFlags(fixedNoZeroes), option(optAbort, 1, 2, 3)),
			err:     ErrAborted,
			replies: []string{"2 ACK"},
		},
		{
			name:    "list",
			script:  cat(clientFlags(fixedNoZeroes), option(optList), option(optAbort)),
			err:     ErrAborted,
			replies: []string{`3 SERVER "disk" "a test disk"`, `3 SERVER "small" ""`, "3 ACK", "2 ACK"},
		},
		{
			name:    "list with data",
			script:  cat(clientFlags(fixedNoZeroes), option(optList, 'x'), option(optAbort)),
			err:     ErrAborted,
			replies: []string{"3 ERR_INVALID: NBD_OPT_LIST takes no data", "2 ACK"},
		},
		{
			name: "unsupported options, meta contexts before structured replies, then GO",
			script: cat(clientFlags(fixedNoZeroes), option(optStartTLS),
				option(optSetMetaContext, metaData("", baseAllocation)...), option(optListMetaContext, metaData("")...),
				option(99, 1, 2), option(optGo, goData("")...)),
			export: "disk",
			replies: append([]string{
				"5 ERR_POLICY: TLS is off on this server",
				"10 ERR_INVALID: NBD_OPT_SET_META_CONTEXT: negotiate NBD_OPT_STRUCTURED_REPLY or NBD_OPT_EXTENDED_HEADERS first",
				"9 ERR_INVALID: NBD_OPT_LIST_META_CONTEXT: negotiate NBD_OPT_STRUCTURED_REPLY or NBD_OPT_EXTENDED_HEADERS first",
				"99 ERR_UNSUP: option 99 is not supported",
			}, append(diskInfo, "7 INFO block sizes 1/4096/33554432", "7 ACK")...),
		},
		{
			name: "structured replies and base:allocation, as qemu and libnbd ask",
			script: cat(clientFlags(fixedNoZeroes), option(optStructuredReply),
				option(optListMetaContext, metaData("disk")...), option(optListMetaContext, metaData("disk", "base:", "qemu:dirty-bitmap:x")...),
				option(optSetMetaContext, metaData("disk", "qemu:allocation-depth", baseAllocation)...),
				option(optGo, goData("disk")...)),
			export: "disk", structured: true, alloc: true,
			replies: []string{
				"8 ACK",
				`9 META_CONTEXT id=0 "base:allocation"`, "9 ACK",
				`9 META_CONTEXT id=0 "base:allocation"`, "9 ACK",
				`10 META_CONTEXT id=1 "base:allocation"`, "10 ACK",
				"7 INFO export size=1048576 flags=" + diskFlagsDF, "7 INFO block sizes 1/4096/33554432", "7 ACK",
			},
		},
		{
			name: "base:allocation selected for the default export, GO by its name",
			script: cat(clientFlags(fixedNoZeroes), option(optStructuredReply),
				option(optSetMetaContext, metaData("", baseAllocation)...), option(optExportName, []byte("disk")...)),
			export: "disk", structured: true, alloc: true,
			replies: []string{"8 ACK", `10 META_CONTEXT id=1 "base:allocation"`, "10 ACK"},
			rest:    "0000000000100000" + "01e1",
		},
		{
			name: "base:allocation selected for another export",
			script: cat(clientFlags(fixedNoZeroes), option(optStructuredReply),
				option(optSetMetaContext, metaData("disk", baseAllocation)...), option(optGo, goData("small")...)),
			export: "small", structured: true,
			replies: []string{"8 ACK", `10 META_CONTEXT id=1 "base:allocation"`, "10 ACK",
				"7 INFO export size=65536 flags=0x183", "7 INFO block sizes 512/4096/33554432", "7 ACK"},
		},
		{
			name: "a later SET that selects nothing, or fails, unselects",
			script: cat(clientFlags(fixedNoZeroes), option(optStructuredReply),
				option(optSetMetaContext, metaData("disk", baseAllocation)...), option(optSetMetaContext, metaData("disk", "base:")...),
				option(optSetMetaContext, metaData("disk", baseAllocation)...), option(optSetMetaContext, metaData("nope", baseAllocation)...),
				option(optGo, goData("disk")...)),
			export: "disk", structured: true,
			replies: append([]string{"8 ACK", `10 META_CONTEXT id=1 "base:allocation"`, "10 ACK", "10 ACK",
				`10 META_CONTEXT id=1 "base:allocation"`, "10 ACK", `10 ERR_UNKNOWN: no export "nope"`,
				"7 INFO export size=1048576 flags=" + diskFlagsDF}, "7 INFO block sizes 1/4096/33554432", "7 ACK"),
		},
		{
			name: "bad structured reply and meta context data",
			script: cat(clientFlags(fixedNoZeroes), option(optStructuredReply, 1), option(optStructuredReply),
				option(optListMetaContext, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0), option(optSetMetaContext, append(metaData("disk"), 0)...),
				option(optListMetaContext, metaData("di\x00sk")...), option(optAbort)),
			err: ErrAborted,
			replies: []string{"8 ERR_INVALID: NBD_OPT_STRUCTURED_REPLY takes no data", "8 ACK",
				"9 ERR_INVALID: NBD_OPT_LIST_META_CONTEXT: the data does not add up",
				"10 ERR_INVALID: NBD_OPT_SET_META_CONTEXT: the data does not add up",
				"9 ERR_INVALID: NBD_OPT_LIST_META_CONTEXT: the export name contains NUL", "2 ACK"},
		},
		{
			name:   "EXPORT_NAME with NO_ZEROES",
			script: cat(clientFlags(fixedNoZeroes), option(optExportName, []byte("small")...)),
			export: "small",
			rest:   "0000000000010000" + "0103",
		},
		{
			name:   "EXPORT_NAME with the zeroes (nbd-client's old style)",
			script: cat(clientFlags(clientFixedNewstyle), option(optExportName)),
			export: "disk",
			rest:   "0000000000100000" + "0161" + strings.Repeat("00", 124),
		},
		{
			name:   "EXPORT_NAME of an unknown export drops the connection",
			script: cat(clientFlags(fixedNoZeroes), option(optExportName, []byte("nope")...)),
			err:    ErrProtocol,
		},
		{
			name:   "GO data that does not add up",
			script: cat(clientFlags(fixedNoZeroes), option(optGo, 0, 0, 0, 9, 'a', 0, 0), option(optGo, append(goData("disk"), 0)...), option(optAbort)),
			err:    ErrAborted,
			replies: []string{"7 ERR_INVALID: NBD_OPT_GO: the data does not add up", "7 ERR_INVALID: NBD_OPT_GO: the data does not add up",
				"2 ACK"},
		},
		{
			name:    "GO with a name over 4096 bytes",
			script:  cat(clientFlags(fixedNoZeroes), option(optGo, goData(strings.Repeat("n", 4097))...), option(optAbort)),
			err:     ErrAborted,
			replies: []string{"7 ERR_TOO_BIG: NBD_OPT_GO: the export name is 4097 bytes, over the limit of 4096", "2 ACK"},
		},
		{
			name:    "GO with a NUL in the name",
			script:  cat(clientFlags(fixedNoZeroes), option(optGo, goData("di\x00sk")...), option(optAbort)),
			err:     ErrAborted,
			replies: []string{"7 ERR_INVALID: NBD_OPT_GO: the export name contains NUL", "2 ACK"},
		},
		{
			name:    "option data over 16 KiB is skipped and refused",
			script:  cat(clientFlags(fixedNoZeroes), option(optGo, make([]byte, 20000)...), option(optGo, goData("")...)),
			export:  "disk",
			replies: append([]string{"7 ERR_TOO_BIG: NBD_OPT_GO: 20000 bytes of option data is too much"}, append(diskInfo, "7 INFO block sizes 1/4096/33554432", "7 ACK")...),
		},
		{
			name: "extended headers alone, then base:allocation and GO",
			script: cat(clientFlags(fixedNoZeroes), option(optExtendedHeaders, 1), option(optExtendedHeaders),
				option(optStructuredReply), option(optSetMetaContext, metaData("", baseAllocation)...), option(optGo, goData("")...)),
			export: "disk", ext: true, alloc: true,
			replies: []string{
				"11 ERR_INVALID: NBD_OPT_EXTENDED_HEADERS takes no data", "11 ACK",
				"8 ERR_EXT_HEADER_REQD: NBD_OPT_STRUCTURED_REPLY: extended headers are already agreed and take precedence",
				`10 META_CONTEXT id=1 "base:allocation"`, "10 ACK",
				"7 INFO export size=1048576 flags=" + diskFlagsDF, "7 INFO block sizes 1/4096/33554432", "7 ACK",
			},
		},
		{
			name:   "structured replies, then extended headers, as qemu 8.2 asks",
			script: cat(clientFlags(fixedNoZeroes), option(optStructuredReply), option(optExtendedHeaders), option(optGo, goData("")...)),
			export: "disk", structured: true, ext: true,
			replies: []string{"8 ACK", "11 ACK", "7 INFO export size=1048576 flags=" + diskFlagsDF, "7 INFO block sizes 1/4096/33554432", "7 ACK"},
		},
		{
			name:    "NBD_OPT_EXPORT_NAME after extended headers drops the connection",
			script:  cat(clientFlags(fixedNoZeroes), option(optExtendedHeaders), option(optExportName, []byte("disk")...)),
			err:     ErrProtocol,
			replies: []string{"11 ACK"},
		},
		{
			name:   "option data over 1 MiB drops the connection",
			script: cat(clientFlags(fixedNoZeroes), option(optGo)[:12], []byte{0, 0x20, 0, 0}),
			err:    ErrProtocol,
		},
		{
			name:   "bad option magic",
			script: cat(clientFlags(fixedNoZeroes), []byte("GET / HTTP/1.1\r\n\r\n")),
			err:    ErrProtocol,
		},
		{
			name:   "unknown client flags",
			script: clientFlags(0x80000001),
			err:    ErrProtocol,
		},
		{
			name:   "client hangs up after the flags",
			script: clientFlags(fixedNoZeroes),
			err:    io.EOF,
		},
		{
			name:    "too many options",
			script:  cat(clientFlags(fixedNoZeroes), bytes.Repeat(option(optStructuredReply), MaxOptions+1)),
			err:     ErrProtocol,
			replies: repeatLine("8 ACK", MaxOptions),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newTestExports(t)
			r := runHandshake(t, x, tt.script, HandshakeOptions{Timeout: 5 * time.Second})
			if tt.err == nil && r.err != nil || tt.err != nil && !errors.Is(r.err, tt.err) {
				t.Fatalf("Handshake error = %v, want %v", r.err, tt.err)
			}
			switch {
			case tt.export == "" && r.exp != nil:
				t.Errorf("Handshake chose %q, want no export", r.exp.Name)
			case tt.export != "" && (r.exp == nil || r.exp.Name != tt.export):
				t.Errorf("Handshake chose %v, want %q", r.exp, tt.export)
			}
			if strings.Join(r.replies, "\n") != strings.Join(tt.replies, "\n") {
				t.Errorf("replies:\n%s\nwant:\n%s", strings.Join(r.replies, "\n"), strings.Join(tt.replies, "\n"))
			}
			if r.sess.StructuredReplies != tt.structured || r.sess.BaseAllocation != tt.alloc || r.sess.ExtendedHeaders != tt.ext {
				t.Errorf("session: structured replies %v, base:allocation %v, extended headers %v; want %v, %v, %v",
					r.sess.StructuredReplies, r.sess.BaseAllocation, r.sess.ExtendedHeaders, tt.structured, tt.alloc, tt.ext)
			}
			if got := fmt.Sprintf("%x", r.rest); got != tt.rest {
				t.Errorf("after the replies: %s, want %s", got, tt.rest)
			}
		})
	}
}

func repeatLine(s string, n int) []string {
	l := make([]string, n)
	for i := range l {
		l[i] = s
	}
	return l
}

// TestHandshakeTimeout: a client that stalls anywhere in the handshake is
// cut off at the deadline, and so is one when ctx is cancelled.
func TestHandshakeTimeout(t *testing.T) {
	for _, script := range [][]byte{nil, clientFlags(1), cat(clientFlags(1), option(optGo)[:10])} {
		srv, cli := net.Pipe()
		go io.Copy(io.Discard, cli)
		go cli.Write(script)
		start := time.Now()
		_, err := Handshake(context.Background(), srv, newTestExports(t), HandshakeOptions{Timeout: 100 * time.Millisecond})
		if !errors.Is(err, ErrHandshakeTimeout) {
			t.Errorf("after %d bytes: Handshake error = %v, want ErrHandshakeTimeout", len(script), err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("after %d bytes: Handshake returned after %v", len(script), d)
		}
		srv.Close()
		cli.Close()
	}

	srv, cli := net.Pipe()
	defer srv.Close()
	defer cli.Close()
	go io.Copy(io.Discard, cli)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := Handshake(ctx, srv, newTestExports(t), HandshakeOptions{Timeout: time.Minute}); !errors.Is(err, context.Canceled) {
		t.Errorf("Handshake error after cancel = %v, want context.Canceled", err)
	}
}

func TestParseInfoRequest(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want *infoRequest
	}{
		{"empty name, no infos", []byte{0, 0, 0, 0, 0, 0}, &infoRequest{name: "", infos: []uint16{}}},
		{"name and two infos", []byte{0, 0, 0, 2, 'a', 'b', 0, 2, 0, 3, 0, 1}, &infoRequest{name: "ab", infos: []uint16{3, 1}}},
		{"too short", []byte{0, 0, 0, 0, 0}, nil},
		{"name past the end", []byte{0, 0, 0, 1, 0, 0}, nil},
		{"name length near 2^32", []byte{0xff, 0xff, 0xff, 0xfc, 0, 0}, nil},
		{"count past the end", []byte{0, 0, 0, 0, 0, 1}, nil},
		{"trailing byte", []byte{0, 0, 0, 0, 0, 0, 9}, nil},
	}
	for _, tt := range tests {
		got, ok := parseInfoRequest(tt.data)
		if ok != (tt.want != nil) || ok && (got.name != tt.want.name || fmt.Sprint(got.infos) != fmt.Sprint(tt.want.infos)) {
			t.Errorf("%s: parseInfoRequest([% x]) = %+v, %v; want %+v", tt.name, tt.data, got, ok, tt.want)
		}
	}
}

func TestParseMetaRequest(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want *metaRequest
	}{
		{"empty name, no queries", metaData(""), &metaRequest{queries: []string{}}},
		{"name and two queries", metaData("ab", "base:", "base:allocation"), &metaRequest{name: "ab", queries: []string{"base:", "base:allocation"}}},
		{"too short for the count", []byte{0, 0, 0, 0, 0, 0, 0}, nil},
		{"name past the end", []byte{0, 0, 0, 1, 0, 0, 0, 0}, nil},
		{"count past the end", []byte{0, 0, 0, 0, 0, 0, 0, 1}, nil},
		{"count near 2^32", []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, nil},
		{"query past the end", []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 'b'}, nil},
		{"query over 4096 bytes", metaData("", strings.Repeat("q", 4097)), nil},
		{"trailing byte", append(metaData("", "base:"), 0), nil},
	}
	for _, tt := range tests {
		got, ok := parseMetaRequest(tt.data)
		if ok != (tt.want != nil) || ok && (got.name != tt.want.name || fmt.Sprintf("%q", got.queries) != fmt.Sprintf("%q", tt.want.queries)) {
			t.Errorf("%s: parseMetaRequest([% x]) = %+v, %v; want %+v", tt.name, tt.data, got, ok, tt.want)
		}
	}
}
