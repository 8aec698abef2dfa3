package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/internal/tlstest"
)

// serverTLS is a server configuration from a certificate directory made by
// tlstest: its certificate, and with verifyPeer, client certificates
// checked against its ca-cert.pem.
func serverTLS(t testing.TB, dir string, verifyPeer bool) *tls.Config {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	if verifyPeer {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = caPool(t, dir)
	}
	return cfg
}

func caPool(t testing.TB, dir string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("%s: no CA certificate", dir)
	}
	return p
}

// clientTLS is a client configuration from a tlstest directory: the
// server checked against its ca-cert.pem for localhost, and its
// certificate given when it has one.
func clientTLS(t testing.TB, dir string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: caPool(t, dir), ServerName: "localhost"}
	if kp, err := tls.LoadX509KeyPair(filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem")); err == nil {
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg
}

// TestHandshakeTLSRules sends scripted clients to HandshakeConn in each
// TLS mode and checks the replies byte for byte: NBD_OPT_STARTTLS refused
// when TLS is off or with data, acknowledged otherwise (the TLS handshake
// that follows fails here: the scripts speak no TLS), and with
// --tls=require every other option refused with NBD_REP_ERR_TLS_REQD
// before it, so that no export's name, size or description is sent in
// plain text.
func TestHandshakeTLSRules(t *testing.T) {
	certs := tlstest.Make(t)
	cfg := serverTLS(t, certs.Server, false)
	fl := clientFlags(clientFixedNewstyle | clientNoZeroes)
	tlsReqd := func(opt int) string {
		return fmt.Sprintf("%d ERR_TLS_REQD: TLS is required: send NBD_OPT_STARTTLS first", opt)
	}
	diskGo := []string{"7 INFO export size=1048576 flags=" + diskFlags, "7 INFO block sizes 1/4096/33554432", "7 ACK"}
	tests := []struct {
		name    string
		mode    TLSMode
		script  []byte
		export  string // the export chosen, "" for none
		err     string // in the error, "" for none
		replies []string
		rest    string // prefix of the hex of the bytes after the replies
	}{
		{
			name:    "off: STARTTLS refused by policy, then GO",
			mode:    TLSOff,
			script:  cat(fl, option(optStartTLS), option(optGo, goData("")...)),
			export:  "disk",
			replies: append([]string{"5 ERR_POLICY: TLS is off on this server"}, diskGo...),
		},
		{
			name:    "off: STARTTLS with data",
			mode:    TLSOff,
			script:  cat(fl, option(optStartTLS, 1), option(optAbort)),
			err:     ErrAborted.Error(),
			replies: []string{"5 ERR_INVALID: NBD_OPT_STARTTLS takes no data", "2 ACK"},
		},
		{
			name:    "on: plain clients are served",
			mode:    TLSOn,
			script:  cat(fl, option(optList), option(optGo, goData("")...)),
			export:  "disk",
			replies: append([]string{`3 SERVER "disk" "a test disk"`, `3 SERVER "small" ""`, "3 ACK"}, diskGo...),
		},
		{
			name:    "on: STARTTLS acknowledged, then the TLS handshake (the client hangs up)",
			mode:    TLSOn,
			script:  cat(fl, option(optList), option(optStartTLS)),
			err:     "nbd: TLS handshake: EOF",
			replies: []string{`3 SERVER "disk" "a test disk"`, `3 SERVER "small" ""`, "3 ACK", "5 ACK"},
		},
		{
			name: "require: every option but STARTTLS and ABORT refused before TLS",
			mode: TLSRequire,
			script: cat(fl, option(optList), option(optInfo, goData("disk", infoName, infoDescription)...), option(optGo, goData("")...),
				option(optStructuredReply), option(optSetMetaContext, goData("")...), option(99, 1, 2, 3), option(optAbort)),
			err:     ErrAborted.Error(),
			replies: []string{tlsReqd(3), tlsReqd(6), tlsReqd(7), tlsReqd(8), tlsReqd(10), tlsReqd(99), "2 ACK"},
		},
		{
			name:    "require: oversized option data skipped and refused as TLS_REQD",
			mode:    TLSRequire,
			script:  cat(fl, option(optGo, make([]byte, 100000)...), option(optAbort)),
			err:     ErrAborted.Error(),
			replies: []string{tlsReqd(7), "2 ACK"},
		},
		{
			name:   "require: option data over 1 MiB before TLS drops the connection",
			mode:   TLSRequire,
			script: cat(fl, option(optGo)[:12], []byte{0, 0x20, 0, 0}),
			err:    "NBD_OPT_GO with 2097152 bytes of data",
		},
		{
			name:   "require: EXPORT_NAME before TLS drops the connection",
			mode:   TLSRequire,
			script: cat(fl, option(optExportName, []byte("disk")...)),
			err:    "NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS, and this server requires TLS",
		},
		{
			name:    "require: STARTTLS with data is invalid, not TLS_REQD",
			mode:    TLSRequire,
			script:  cat(fl, option(optStartTLS, 0), option(optAbort)),
			err:     ErrAborted.Error(),
			replies: []string{"5 ERR_INVALID: NBD_OPT_STARTTLS takes no data", "2 ACK"},
		},
		{
			name:    "require: a refused option, STARTTLS, then plain text where TLS must be",
			mode:    TLSRequire,
			script:  cat(fl, option(optList), option(optStartTLS), option(optList)),
			err:     "nbd: TLS handshake: tls: first record does not look like a TLS handshake",
			replies: []string{tlsReqd(3), "5 ACK"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runHandshakeConn(t, newTestExports(t), tt.script, HandshakeOptions{Timeout: 5 * time.Second, TLS: tt.mode, TLSConfig: cfg})
			if tt.err == "" && r.err != nil || tt.err != "" && (r.err == nil || !strings.Contains(r.err.Error(), tt.err)) {
				t.Fatalf("HandshakeConn error = %v, want %q", r.err, tt.err)
			}
			switch {
			case tt.export == "" && r.exp != nil:
				t.Errorf("HandshakeConn chose %q, want no export", r.exp.Name)
			case tt.export != "" && (r.exp == nil || r.exp.Name != tt.export):
				t.Errorf("HandshakeConn chose %v, want %q", r.exp, tt.export)
			}
			if strings.Join(r.replies, "\n") != strings.Join(tt.replies, "\n") {
				t.Errorf("replies:\n%s\nwant:\n%s", strings.Join(r.replies, "\n"), strings.Join(tt.replies, "\n"))
			}
			if got := fmt.Sprintf("%x", r.rest); !strings.HasPrefix(got, tt.rest) || tt.rest == "" && got != "" {
				t.Errorf("after the replies: %s, want %s", got, tt.rest)
			}
			if tt.mode == TLSRequire && bytes.Contains(r.raw, []byte("disk")) {
				t.Errorf("the server sent an export's name before TLS: [% x]", r.raw)
			}
		})
	}
}

// tlsResult is what one scripted client saw of HandshakeConn.
type tlsResult struct {
	handshakeResult
	raw []byte // everything the server sent
}

// runHandshakeConn is runHandshake through HandshakeConn.
func runHandshakeConn(t *testing.T, x Exports, script []byte, opts HandshakeOptions) tlsResult {
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
	sess, _, err := HandshakeConn(context.Background(), srv, x, opts)
	srv.Close()
	out := <-got
	g := greeting()
	if !bytes.HasPrefix(out, g[:]) {
		t.Fatalf("the server began with [% x], want the greeting [% x]", out[:min(len(out), 18)], g)
	}
	replies, rest, err2 := describeReplies(out[18:])
	if err2 != nil {
		t.Fatalf("replies: %v", err2)
	}
	return tlsResult{handshakeResult{exp: sess.Export, err: err, replies: replies, rest: rest}, out}
}

// tlsClient is the client side of a handshake that starts TLS, written
// from the protocol document.
type tlsClient struct {
	t  *testing.T
	rw io.ReadWriter // the socket, then the TLS connection
}

func (c *tlsClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.rw.Write(b); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

// replies reads option replies up to the one of type final (ACK or an
// error) and describes them as describeReplies does.
func (c *tlsClient) replies() []string {
	c.t.Helper()
	var lines []string
	for {
		var h [optReplyHeaderSize]byte
		if _, err := io.ReadFull(c.rw, h[:]); err != nil {
			c.t.Fatalf("client read: %v (after %q)", err, lines)
		}
		data := make([]byte, binary.BigEndian.Uint32(h[16:]))
		if _, err := io.ReadFull(c.rw, data); err != nil {
			c.t.Fatalf("client read: %v", err)
		}
		l, _, err := describeReplies(append(h[:], data...))
		if err != nil || len(l) != 1 {
			c.t.Fatalf("reply [% x]: %v", h, err)
		}
		lines = append(lines, l[0])
		if typ := binary.BigEndian.Uint32(h[12:]); typ != repServer && typ != repInfo {
			return lines
		}
	}
}

// TestHandshakeTLSSession runs a real TLS client (crypto/tls) through
// NBD_OPT_STARTTLS against HandshakeConn with --tls=require: refused, then
// upgraded, STARTTLS again refused, the export list and NBD_OPT_GO over
// TLS, then a READ in the transmission phase on the connection
// HandshakeConn returned. Client certificates: checked when the server
// asks, and named by DescribeTLS.
func TestHandshakeTLSSession(t *testing.T) {
	certs := tlstest.Make(t)
	// stranger trusts the server's CA but has a certificate of another.
	stranger := clientTLS(t, certs.Stranger)
	stranger.RootCAs = caPool(t, certs.CAOnly)
	// Sent even though the server names the CAs it accepts (crypto/tls
	// sends none that they did not sign; gnutls and qemu may).
	stranger.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger.Certificates[0], nil }
	tests := []struct {
		name       string
		client     *tls.Config
		verifyPeer bool
		serverErr  string // in HandshakeConn's error, "" for success
		describe   string // DescribeTLS of the connection
	}{
		{"CA only", clientTLS(t, certs.CAOnly), false, "", "TLS 1.3"},
		{"client certificate not asked for", clientTLS(t, certs.Client), false, "", "TLS 1.3"},
		{"client certificate checked", clientTLS(t, certs.Client), true, "", `TLS 1.3, client certificate "` + tlstest.ClientSubject + `"`},
		{"client without the CA", clientTLS(t, certs.Stranger), false, "remote error: tls: bad certificate", ""},
		{"no client certificate", clientTLS(t, certs.CAOnly), true, "tls: client didn't provide a certificate", ""},
		{"client certificate of another CA", stranger, true, "tls: failed to verify certificate", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newTestExports(t)
			srv, cli := socketPair(t)
			type result struct {
				exp  *Export
				conn net.Conn
				err  error
			}
			done := make(chan result, 1)
			go func() {
				sess, conn, err := HandshakeConn(context.Background(), srv, x, HandshakeOptions{Timeout: 10 * time.Second, TLS: TLSRequire, TLSConfig: serverTLS(t, certs.Server, tt.verifyPeer)})
				done <- result{sess.Export, conn, err}
			}()
			c := &tlsClient{t: t, rw: cli}
			var g [18]byte
			if _, err := io.ReadFull(cli, g[:]); err != nil {
				t.Fatal(err)
			}
			c.send(cat(clientFlags(clientFixedNewstyle|clientNoZeroes), option(optList)))
			want := []string{"3 ERR_TLS_REQD: TLS is required: send NBD_OPT_STARTTLS first"}
			if got := c.replies(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("LIST before TLS: %q, want %q", got, want)
			}
			c.send(option(optStartTLS))
			if got := c.replies(); fmt.Sprint(got) != "[5 ACK]" {
				t.Fatalf("STARTTLS: %q", got)
			}
			tc := tls.Client(cli, tt.client)
			c.rw = tc
			if tt.serverErr != "" {
				// The client may finish its side first (TLS 1.3): its
				// next read gets the server's alert.
				if err := tc.Handshake(); err == nil {
					c.send(option(optList))
					if _, err := tc.Read(make([]byte, 1)); err == nil {
						t.Error("the client read a reply from a server that refused its certificate")
					}
				}
				r := <-done
				if r.err == nil || !strings.Contains(r.err.Error(), "nbd: TLS handshake: ") || !strings.Contains(r.err.Error(), tt.serverErr) {
					t.Fatalf("HandshakeConn error = %v, want a TLS handshake error with %q", r.err, tt.serverErr)
				}
				return
			}
			c.send(option(optStartTLS))
			c.send(option(optList))
			c.send(option(optGo, goData("small")...))
			var got []string
			for range 3 {
				got = append(got, c.replies()...)
			}
			want = []string{"5 ERR_INVALID: TLS is already on", `3 SERVER "disk" "a test disk"`, `3 SERVER "small" ""`, "3 ACK",
				"7 INFO export size=65536 flags=" + smallFlags, "7 INFO block sizes 512/4096/33554432", "7 ACK"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("over TLS:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			r := <-done
			if r.err != nil || r.exp == nil || r.exp.Name != "small" {
				t.Fatalf("HandshakeConn = %v, %v; want small", r.exp, r.err)
			}
			if _, ok := r.conn.(*tls.Conn); !ok {
				t.Fatalf("HandshakeConn returned a %T, want the *tls.Conn", r.conn)
			}
			if d := DescribeTLS(r.conn); d != tt.describe {
				t.Errorf("DescribeTLS = %q, want %q", d, tt.describe)
			}
			served := make(chan error, 1)
			go func() { served <- r.exp.Server.ServeConn(context.Background(), r.conn, 0) }()
			req := make([]byte, RequestSize)
			PutRequest(req, RequestHeader{Op: request.OpRead, Cookie: 0xfeed, Offset: 4096, Length: 512})
			c.send(req)
			reply := make([]byte, ReplySize+512)
			if _, err := io.ReadFull(tc, reply); err != nil {
				t.Fatalf("READ over TLS: %v", err)
			}
			if rep, err := ParseReply(reply); err != nil || rep != (Reply{Cookie: 0xfeed}) || !bytes.Equal(reply[ReplySize:], make([]byte, 512)) {
				t.Errorf("READ reply [% x]: %v", reply[:ReplySize], err)
			}
			PutRequest(req, RequestHeader{Op: request.OpDisc})
			c.send(req)
			if err := <-served; err != nil {
				t.Errorf("ServeConn over TLS: %v", err)
			}
			if d := DescribeTLS(cli); d != "no TLS" {
				t.Errorf("DescribeTLS of a plain connection = %q", d)
			}
		})
	}
}

// TestHandshakeTLSTimeout: a client that stalls after NBD_OPT_STARTTLS is
// cut off at the handshake's deadline.
func TestHandshakeTLSTimeout(t *testing.T) {
	certs := tlstest.Make(t)
	srv, cli := socketPair(t)
	go io.Copy(io.Discard, cli)
	cli.Write(cat(clientFlags(clientFixedNewstyle), option(optStartTLS)))
	start := time.Now()
	_, _, err := HandshakeConn(context.Background(), srv, newTestExports(t), HandshakeOptions{Timeout: 200 * time.Millisecond, TLS: TLSOn, TLSConfig: serverTLS(t, certs.Server, false)})
	if !errors.Is(err, ErrHandshakeTimeout) {
		t.Errorf("HandshakeConn error = %v, want ErrHandshakeTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("HandshakeConn returned after %v", d)
	}
}

// TestHandshakeTLSMisuse: Handshake serves no TLS, and HandshakeConn needs
// a configuration for it.
func TestHandshakeTLSMisuse(t *testing.T) {
	srv, _ := socketPair(t)
	if _, err := Handshake(context.Background(), srv, newTestExports(t), HandshakeOptions{TLS: TLSOn}); !errors.Is(err, errTLSNeedsConn) {
		t.Errorf("Handshake with TLS: %v", err)
	}
	if _, _, err := HandshakeConn(context.Background(), srv, newTestExports(t), HandshakeOptions{TLS: TLSRequire}); err == nil || err.Error() != "nbd: TLS require without a TLS configuration" {
		t.Errorf("HandshakeConn without a configuration: %v", err)
	}
}
