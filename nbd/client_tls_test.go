package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tlstest"
)

// serveOneTLS runs nbd's own server for one client on a socketpair, with
// TLS as opts say, and returns the client's end and what the server's
// handshake ended with.
func serveOneTLS(t testing.TB, x Exports, opts HandshakeOptions) (net.Conn, <-chan error) {
	t.Helper()
	srv, cli := connPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	res := make(chan error, 1)
	go func() {
		defer close(done)
		defer srv.Close()
		sess, conn, err := HandshakeConn(ctx, srv, x, opts)
		res <- err
		if err == nil {
			sess.Serve(ctx, conn, 0)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cli, res
}

// TestClientTLS connects the client with TLS to nbd's own server in each
// TLS mode: data goes through over TLS where the server offers it and
// the certificates match, and everything else fails the handshake with
// one line, never carrying on in plain text.
func TestClientTLS(t *testing.T) {
	certs := tlstest.Make(t)
	tests := []struct {
		name       string
		mode       TLSMode
		verifyPeer bool
		client     *tls.Config
		wantErr    string // or several, separated by |: what the client sees depends on when the server hangs up
		refused    bool   // the error wraps ErrTLSRefused
	}{
		{name: "require", mode: TLSRequire, client: clientTLS(t, certs.CAOnly)},
		{name: "on", mode: TLSOn, client: clientTLS(t, certs.CAOnly)},
		{name: "client certificate checked", mode: TLSRequire, verifyPeer: true, client: clientTLS(t, certs.Client)},
		{name: "off", mode: TLSOff, client: clientTLS(t, certs.CAOnly), refused: true,
			wantErr: "nbd: the server does not offer TLS: it refused NBD_OPT_STARTTLS with NBD_REP_ERR_POLICY (TLS is off on this server), and TLS is required"},
		{name: "wrong CA", mode: TLSRequire, client: clientTLS(t, certs.Stranger),
			wantErr: "nbd: TLS handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{name: "wrong name", mode: TLSRequire, client: &tls.Config{RootCAs: caPool(t, certs.CAOnly), ServerName: "other.test"},
			wantErr: "nbd: TLS handshake: tls: failed to verify certificate: x509: certificate is valid for localhost, not other.test"},
		{name: "no client certificate", mode: TLSRequire, verifyPeer: true, client: clientTLS(t, certs.CAOnly),
			wantErr: "remote error: tls: certificate required|(the server hung up after the TLS handshake: does it want a client certificate?)"},
		{name: "client certificate of another CA", mode: TLSRequire, verifyPeer: true,
			client:  &tls.Config{RootCAs: caPool(t, certs.CAOnly), ServerName: "localhost", Certificates: clientTLS(t, certs.Stranger).Certificates},
			wantErr: "remote error: tls: certificate required|(the server hung up after the TLS handshake: does it want a client certificate?)"}, // Go offers no certificate the server's CA did not sign
		{name: "TLS 1.1 asked for", mode: TLSRequire, client: &tls.Config{RootCAs: caPool(t, certs.CAOnly), ServerName: "localhost", MaxVersion: tls.VersionTLS11},
			wantErr: "nbd: TLS handshake: tls: no supported versions satisfy MinVersion and MaxVersion"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := clientExports{"disk": memoryExport(t, "disk", 1<<20, false, 0)}
			conn, res := serveOneTLS(t, x, HandshakeOptions{TLS: tt.mode, TLSConfig: serverTLS(t, certs.Server, tt.verifyPeer)})
			c, err := NewClient(context.Background(), conn, ClientOptions{Export: "disk", TLSConfig: tt.client})
			if tt.wantErr != "" {
				if err == nil {
					c.Close()
					t.Fatalf("NewClient succeeded, want %q", tt.wantErr)
				}
				if !containsAny(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Errorf("NewClient: %v\nwant one line containing %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrTLSRefused) != tt.refused {
					t.Errorf("errors.Is(%v, ErrTLSRefused) = %v, want %v", err, !tt.refused, tt.refused)
				}
				conn.Close()
				if serr := <-res; serr == nil {
					t.Errorf("the server's handshake succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if serr := <-res; serr != nil {
				t.Fatalf("server: %v", serr)
			}
			tc, ok := c.conn.(*tls.Conn)
			if !ok || tc.ConnectionState().Version < tls.VersionTLS12 {
				t.Fatalf("the client's connection is %T, want TLS 1.2 or later", c.conn)
			}
			p := bytes.Repeat([]byte("tls!"), 1024)
			if err := c.Write(p, 4096, true); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(p))
			if err := c.Read(got, 4096); err != nil || !bytes.Equal(got, p) {
				t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, p))
			}
		})
	}
}

// TestClientStartTLSFirst holds that a client asked for TLS sends
// NBD_OPT_STARTTLS as its first option, before anything about an export,
// and gives up when the server refuses it in any way, or is not fixed
// newstyle.
func TestClientStartTLSFirst(t *testing.T) {
	cfg := &tls.Config{ServerName: "localhost"}
	tests := []struct {
		name    string
		flags   uint16
		reply   []byte
		wantErr string
	}{
		{name: "unsupported", flags: handshakeFixedNewstyle, reply: optReply(optStartTLS, repErrUnsup, nil),
			wantErr: "nbd: the server does not offer TLS: it refused NBD_OPT_STARTTLS with NBD_REP_ERR_UNSUP, and TLS is required"},
		{name: "policy with a message", flags: handshakeFixedNewstyle | handshakeNoZeroes, reply: optReply(optStartTLS, repErrPolicy, []byte("no\nTLS")),
			wantErr: "it refused NBD_OPT_STARTTLS with NBD_REP_ERR_POLICY (no?TLS), and TLS is required"},
		{name: "ack with data", flags: handshakeFixedNewstyle, reply: optReply(optStartTLS, repAck, []byte{1}),
			wantErr: "NBD_REP_ACK with 1 bytes of data"},
		{name: "not fixed newstyle", flags: 0,
			wantErr: "the server is not fixed newstyle, so it cannot offer TLS (NBD_OPT_STARTTLS), and TLS is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			conn := scriptedServer(t, func(s net.Conn) {
				s.Write(greetingWith(tt.flags))
				b := readN(s, 4+16)
				got <- b
				if tt.reply != nil {
					s.Write(tt.reply)
				}
				readN(s, 1)
			})
			_, err := NewClient(context.Background(), conn, ClientOptions{Export: "secret", TLSConfig: cfg})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewClient: %v, want an error containing %q", err, tt.wantErr)
			}
			conn.Close()
			b := <-got
			if tt.reply == nil {
				if len(b) != 4 {
					t.Errorf("the client sent %d bytes to a server that cannot do TLS, want its 4 bytes of flags alone", len(b))
				}
				return
			}
			want := binary.BigEndian.AppendUint64(b[:4:4], optMagic)
			want = binary.BigEndian.AppendUint32(want, optStartTLS)
			want = binary.BigEndian.AppendUint32(want, 0)
			if !bytes.Equal(b, want) {
				t.Errorf("the client sent [% x], want its flags and NBD_OPT_STARTTLS [% x]", b, want)
			}
		})
	}
}

// containsAny reports whether s contains one of the |-separated wants.
func containsAny(s, wants string) bool {
	for _, w := range strings.Split(wants, "|") {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}
