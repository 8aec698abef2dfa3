package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/nbdtest"
	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// fuzzWorker reports whether this process is one of go test -fuzz's
// workers, which get every input, seeds included, from the coordinator:
// they need not run the clients again (and a worker's children would
// inherit its pipes to the coordinator).
func fuzzWorker() bool {
	w := flag.Lookup("test.fuzzworker")
	return w != nil && w.Value.String() == "true"
}

// recorder keeps a copy of what is read from its connection while on.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	on  bool
	got []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	if r.on {
		r.got = append(r.got, p[:n]...)
	}
	r.mu.Unlock()
	return n, err
}

// captureClients runs NBD clients that nbdloop did not write against
// Handshake on a Unix socket, and returns, per client, the bytes it sent
// during the handshake. Every client
// must succeed: the capture is a compatibility test too.
func captureClients(t testing.TB) map[string][]byte {
	tooltest.Require(t, "nbdinfo", "nbdsh", "qemu-img", "qemu-io", "nbd-client", "nbdkit")
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	x := newTestExports(t)
	sessions := make(chan []byte, 16)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := &recorder{Conn: c, on: true}
				sess, _ := Handshake(ctx, r, x, HandshakeOptions{})
				r.mu.Lock()
				r.on = false
				sessions <- r.got
				r.mu.Unlock()
				if sess.Export != nil {
					sess.Serve(ctx, c, 0)
				}
			}()
		}
	}()
	defer func() {
		cancel()
		ln.Close()
		wg.Wait()
	}()
	uri := "nbd+unix:///?socket=" + sock
	named := "nbd+unix:///small?socket=" + sock
	// nbd-client negotiates, then fails at its first ioctl on a file
	// that is not an NBD device (-nonetlink: no device is touched).
	notDevice := filepath.Join(t.TempDir(), "not-a-device")
	if err := os.WriteFile(notDevice, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// nbdkit's nbd plugin connects to the server when its own client
	// (nbdinfo) asks for the export: twice, for NBD_OPT_INFO and GO.
	proxy := nbdtest.Nbdkit(t, "nbd", "socket="+sock, "export=disk")
	clients := []struct {
		name  string
		cmd   *exec.Cmd
		want  string // in the output
		fail  bool   // the client exits non-zero, after the handshake
		conns int    // connections it makes, all alike (0: one)
	}{
		{"nbdinfo", exec.Command("nbdinfo", uri), "export-size: 1048576", false, 0},
		{"nbdinfo --list", exec.Command("nbdinfo", "--list", uri), "export=\"small\"", false, 0},
		{"nbdsh", exec.Command("nbdsh", "-u", named, "-c", "print(h.get_size(), h.get_block_size(nbd.SIZE_MINIMUM))"), "65536 512", false, 0},
		{"qemu-img info", exec.Command("qemu-img", "info", "--output=json", uri), `"virtual-size": 1048576`, false, 0},
		{"qemu-io", exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read -P 0 0 4k", named), "read 4096/4096 bytes", false, 0},
		{"nbd-client -l", exec.Command("nbd-client", "-l", "-unix", sock), "disk: a test disk", false, 0},
		{"nbd-client", exec.Command("nbd-client", "-unix", sock, "-N", "disk", "-nonetlink", "-b", "4096", notDevice), "Negotiation: ..size = 1MB", true, 0},
		{"nbdkit nbd", exec.Command("nbdinfo", proxy.URI), "export-size: 1048576", false, 2},
	}
	// nbdsh runs python3 from PATH; python3-libnbd installs the module
	// for Debian's, which another python3 earlier in PATH (pyenv) lacks.
	clients[2].cmd.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
	out := map[string][]byte{}
	for _, c := range clients {
		b, err := c.cmd.CombinedOutput()
		if (err != nil) != c.fail || !strings.Contains(string(b), c.want) {
			t.Fatalf("%s: %v (want failure: %v), output lacks %q:\n%s", c.name, err, c.fail, c.want, b)
		}
		for i := 0; i < max(c.conns, 1); i++ {
			select {
			case s := <-sessions:
				if i > 0 && !bytes.Equal(s, out[c.name]) {
					t.Fatalf("%s: connection %d sent [% x], the first [% x]", c.name, i+1, s, out[c.name])
				}
				out[c.name] = s
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: %d connections recorded, want %d", c.name, i, max(c.conns, 1))
			}
		}
	}
	if len(sessions) > 0 {
		t.Fatalf("the clients made %d more connections than expected", len(sessions))
	}
	return out
}

// updateCorpus makes TestHandshakeClients write the clients' handshakes
// as FuzzHandshake's seeds, after Debian's clients changed what they send.
var updateCorpus = flag.Bool("update-corpus", false, "write the clients' handshakes to testdata/fuzz/FuzzHandshake/client-*")

// handshakeCorpus is where FuzzHandshake's seed files are.
const handshakeCorpus = "testdata/fuzz/FuzzHandshake"

// TestHandshakeClients checks that the clients' handshakes, replayed,
// end as they did live: an export chosen, or a soft disconnect. Each is
// a seed of FuzzHandshake, committed as testdata/fuzz/FuzzHandshake/client-*
// (the clients run only here): the files must be what the clients send
// now; -update-corpus rewrites them.
func TestHandshakeClients(t *testing.T) {
	captured := captureClients(t)
	for name, s := range captured {
		sess, err := Handshake(context.Background(), struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(s), io.Discard}, newTestExports(t), HandshakeOptions{})
		if sess.Export == nil && !errors.Is(err, ErrAborted) {
			t.Errorf("%s: replayed handshake: %v", name, err)
		}
	}
	want := map[string][]byte{}
	for name, s := range captured {
		file := "client-" + strings.Join(strings.Fields(strings.ReplaceAll(name, "-", " ")), "-")
		want[file] = fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", s)
	}
	if *updateCorpus {
		if err := os.MkdirAll(handshakeCorpus, 0o755); err != nil {
			t.Fatal(err)
		}
		for file, b := range want {
			if err := os.WriteFile(filepath.Join(handshakeCorpus, file), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	have, _ := filepath.Glob(filepath.Join(handshakeCorpus, "client-*"))
	for _, path := range have {
		if want[filepath.Base(path)] == nil {
			t.Errorf("%s: no client sends it (remove it)", path)
		}
	}
	for file, b := range want {
		path := filepath.Join(handshakeCorpus, file)
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s is not what the client sends now (%v):\n%s\nwant:\n%s\n(go test ./nbd -run TestHandshakeClients -update-corpus rewrites it)", path, err, got, b)
		}
	}
}

// FuzzHandshake feeds arbitrary client bytes to Handshake. Whatever comes
// in, it must return (no panic, no hang on a finished input), choose only
// an export it offers, and send only well-formed option replies, followed
// by nothing or by NBD_OPT_EXPORT_NAME's reply. The same bytes then go to
// HandshakeConn with TLS required, which must send nothing in plain text
// but refusals and acknowledgements (checkTLSRequired).
//
// Seeds: what real clients sent (qemu-img, qemu-io, nbdinfo, nbdsh,
// nbd-client, nbdkit's nbd plugin: the files in testdata/fuzz/FuzzHandshake
// that TestHandshakeClients captures), scripts written from the protocol
// document, and extreme lengths.
func FuzzHandshake(f *testing.F) {
	fl := clientFlags(clientFixedNewstyle | clientNoZeroes)
	for _, s := range [][]byte{
		// NBD_OPT_GO with NBD_INFO_BLOCK_SIZE, or EXPORT_NAME without
		// NO_ZEROES.
		cat(fl, option(optGo, goData("", infoBlockSize)...)),
		cat(clientFlags(clientFixedNewstyle), option(optExportName, []byte("small")...)),
		cat(fl, option(optList), option(optInfo, goData("small", infoName, infoDescription)...), option(optAbort)),
		cat(fl, option(optStructuredReply), option(optSetMetaContext, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 15, 'b', 'a', 's', 'e', ':', 'a', 'l', 'l', 'o', 'c', 'a', 't', 'i', 'o', 'n')),
		// Structured replies and metadata contexts: listed, selected,
		// selected for another export, asked before structured
		// replies, with data that does not add up.
		cat(fl, option(optStructuredReply), option(optListMetaContext, metaData("disk")...),
			option(optListMetaContext, metaData("disk", "base:", "qemu:")...),
			option(optSetMetaContext, metaData("small", baseAllocation)...), option(optGo, goData("small")...)),
		cat(fl, option(optSetMetaContext, metaData("", baseAllocation)...), option(optStructuredReply, 0),
			option(optStructuredReply), option(optSetMetaContext, metaData("small", baseAllocation)...), option(optExportName, []byte("disk")...)),
		cat(fl, option(optStructuredReply), option(optListMetaContext, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff),
			option(optSetMetaContext, metaData("", strings.Repeat("q", MaxNameLength+1))...), option(optExtendedHeaders), option(optAbort)),
		// Extended headers: alone, after and before structured
		// replies, with data, then NBD_OPT_EXPORT_NAME (which they
		// forbid) or GO.
		cat(fl, option(optExtendedHeaders), option(optSetMetaContext, metaData("disk", baseAllocation)...), option(optGo, goData("disk")...)),
		cat(fl, option(optStructuredReply), option(optExtendedHeaders), option(optStructuredReply), option(optListMetaContext, metaData("")...), option(optInfo, goData("")...), option(optAbort)),
		cat(fl, option(optExtendedHeaders, 0xff), option(optExtendedHeaders), option(optExportName, []byte("disk")...)),
		cat(fl, option(optExtendedHeaders)[:12], []byte{0xff, 0xff, 0xff, 0xff}),
		// Extreme lengths.
		cat(fl, option(optGo)[:12], []byte{0xff, 0xff, 0xff, 0xff}),
		cat(fl, option(optGo, 0xff, 0xff, 0xff, 0xff, 0, 0)),
		cat(fl, option(optGo, goData(strings.Repeat("x", MaxNameLength+1))...)),
		cat(fl, option(optGo, make([]byte, maxOptionData+1)...), option(optGo, goData("disk")...)),
		cat(fl, option(optExportName, make([]byte, maxOptionData)...)),
		cat(fl, bytes.Repeat(option(optList), MaxOptions+1)),
		// TLS: refused before STARTTLS when required, STARTTLS with
		// data, then acknowledged (the TLS handshake then reads what
		// follows).
		cat(fl, option(optList), option(optInfo, goData("disk")...), option(optStartTLS, 1), option(optAbort)),
		cat(fl, option(optExportName, []byte("disk")...)),
		cat(fl, option(optGo, make([]byte, maxOptionData+1)...), option(optStartTLS), option(optGo, goData("")...)),
		cat(fl, option(optStartTLS), []byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00}),
		cat(fl, option(optStartTLS), option(optStartTLS)),
		{},
	} {
		f.Add(s)
	}
	x := newTestExports(f)
	offered := map[*Export]bool{}
	for _, e := range x.list {
		offered[e] = true
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		sess, err := Handshake(context.Background(), struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(in), &out}, x, HandshakeOptions{})
		exp := sess.Export
		if sess.BaseAllocation && !sess.StructuredReplies && !sess.ExtendedHeaders {
			t.Fatal("base:allocation without structured replies or extended headers")
		}
		if exp != nil && (err != nil || !offered[exp]) {
			t.Fatalf("Handshake = %p, %v: not an offered export", exp, err)
		}
		if exp == nil && err == nil {
			t.Fatal("Handshake returned neither an export nor an error")
		}
		g := greeting()
		if !bytes.HasPrefix(out.Bytes(), g[:]) {
			t.Fatalf("output begins [% x], not with the greeting", out.Bytes()[:min(out.Len(), 18)])
		}
		_, rest, derr := describeReplies(out.Bytes()[18:])
		if derr != nil {
			t.Fatalf("malformed reply: %v", derr)
		}
		switch {
		case len(rest) == 0:
		case exp != nil && (len(rest) == 10 || len(rest) == 10+exportNameZeroes):
			if binary.BigEndian.Uint64(rest) != exp.Size() {
				t.Fatalf("NBD_OPT_EXPORT_NAME reply gives size %d, export has %d", binary.BigEndian.Uint64(rest), exp.Size())
			}
		default:
			t.Fatalf("%d bytes after the option replies: [% x]", len(rest), rest[:min(len(rest), 32)])
		}
		checkTLSRequired(t, in, x)
	})
}

// checkTLSRequired runs in through HandshakeConn with TLS required and
// checks that nothing but refusals, NBD_OPT_ABORT's ACK and
// NBD_OPT_STARTTLS's ACK went out in plain text, and no export was chosen
// (the input cannot finish a TLS handshake: the server has no
// certificate).
func checkTLSRequired(t *testing.T, in []byte, x Exports) {
	c := &bytesConn{r: bytes.NewReader(in)}
	sess, _, err := HandshakeConn(context.Background(), c, x, HandshakeOptions{TLS: TLSRequire, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}})
	if sess.Export != nil || err == nil {
		t.Fatalf("HandshakeConn with TLS required = %v, %v: an export without TLS", sess.Export, err)
	}
	out := c.w.Bytes()
	g := greeting()
	if !bytes.HasPrefix(out, g[:]) {
		t.Fatalf("output begins [% x], not with the greeting", out[:min(len(out), 18)])
	}
	lines, rest, derr := describeReplies(out[18:])
	if derr != nil {
		t.Fatalf("malformed reply: %v", derr)
	}
	started := false
	for _, l := range lines {
		switch {
		case started:
			t.Fatalf("plain-text reply after STARTTLS's ACK: %q", l)
		case l == "5 ACK":
			started = true
		case l == "2 ACK", strings.Contains(l, " ERR_TLS_REQD: "), strings.HasPrefix(l, "5 ERR_INVALID: "):
		default:
			t.Fatalf("reply before TLS: %q", l)
		}
	}
	if len(rest) > 0 && !started {
		t.Fatalf("%d bytes after the option replies, before TLS: [% x]", len(rest), rest[:min(len(rest), 32)])
	}
}

// bytesConn is a net.Conn that reads a fixed input and records what is
// written, for crypto/tls in a fuzz target; it has no deadlines.
type bytesConn struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (c *bytesConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *bytesConn) Close() error                     { return nil }
func (c *bytesConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (c *bytesConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }
