package attach

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/nbdtest"
	"github.com/nbdloop/nbdloop/internal/tlstest"
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
)

// tlsExport serves a memory export "disk" of 1 MiB on a Unix socket the
// way nbdloop serve does: with mode, and the certificate directory dir
// loaded by serverTLSConfig. It returns the socket.
func tlsExport(t *testing.T, mode nbd.TLSMode, dir string, verifyPeer bool) string {
	t.Helper()
	var opts nbd.ListenOptions
	if mode != nbd.TLSOff {
		cfg, err := serverTLSConfig(dir, verifyPeer)
		if err != nil {
			t.Fatal(err)
		}
		opts.Handshake = nbd.HandshakeOptions{TLS: mode, TLSConfig: cfg}
	}
	m, err := sources.NewMemory(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	exp := &nbd.Export{Name: "disk", Server: nbd.NewServer(m, nbd.Options{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- nbd.ServeListeners(ctx, []net.Listener{ln}, oneExport{exp}, opts) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return sock
}

// nbdkitTLS starts nbdkit's memory plugin on a Unix socket with args
// (its TLS flags).
func nbdkitTLS(t *testing.T, args ...string) *nbdtest.Server {
	t.Helper()
	sock := nbdtest.SocketPath(t)
	return nbdtest.Command(t, sock, "", append(append([]string{"nbdkit", "-f", "-U", sock}, args...), "memory", "64M")...)
}

// copyDir copies the files of src into a new directory, with mode.
func copyDir(t *testing.T, src string, mode os.FileMode) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dst, e.Name()), mode); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestOpenRemoteTLS opens nbds+unix:// SOURCEs as attach does, against
// nbd's own server with nbdloop serve's TLS configuration and against
// nbdkit --tls=require: data goes through where the certificates match;
// a wrong CA, a wrong name, a missing client certificate and a server
// without TLS are refused with one line, never with a fall back to plain
// text.
func TestOpenRemoteTLS(t *testing.T) {
	certs := tlstest.Make(t)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no default certificates
	own := tlsExport(t, nbd.TLSRequire, certs.Server, false)
	ownOn := tlsExport(t, nbd.TLSOn, certs.Server, false)
	ownPeer := tlsExport(t, nbd.TLSRequire, certs.Server, true)
	ownPlain := tlsExport(t, nbd.TLSOff, "", false)
	kit := nbdkitTLS(t, "--tls=require", "--tls-certificates="+certs.Server)
	kitPeer := nbdkitTLS(t, "--tls=require", "--tls-certificates="+certs.Server, "--tls-verify-peer")
	kitPlain := nbdkitTLS(t)
	openKey := copyDir(t, certs.Client, 0o644)
	certOnly := copyDir(t, certs.Client, 0o600)
	os.Remove(filepath.Join(certOnly, "client-key.pem"))
	noCA := t.TempDir()
	uri := func(sock, export, query string) string {
		return "nbds+unix:///" + export + "?socket=" + sock + query
	}
	tests := []struct {
		name    string
		uri     string
		wantErr string // or several, separated by |: what the client sees depends on when the server hangs up
	}{
		{name: "own server, CA only, with tls-hostname", uri: uri(own, "disk", "&tls-certificates="+certs.CAOnly+"&tls-hostname=localhost")},
		{name: "own server, CA only, no name over a Unix socket", uri: uri(own, "disk", "&tls-certificates="+certs.CAOnly)},
		{name: "own server, TLS offered", uri: uri(ownOn, "disk", "&tls-certificates="+certs.CAOnly)},
		{name: "own server checking clients", uri: uri(ownPeer, "disk", "&tls-certificates="+certs.Client+"&tls-hostname=localhost")},
		{name: "own server, verification off", uri: uri(own, "disk", "&tls-certificates="+certs.Stranger+"&tls-verify-peer=false")},
		{name: "nbdkit", uri: uri(kit.Socket, "", "&tls-certificates="+certs.CAOnly+"&tls-hostname=localhost")},
		{name: "nbdkit checking clients", uri: uri(kitPeer.Socket, "", "&tls-certificates="+certs.Client)},

		{name: "own server, wrong CA", uri: uri(own, "disk", "&tls-certificates="+certs.Stranger),
			wantErr: "nbd: TLS handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{name: "own server, wrong name", uri: uri(own, "disk", "&tls-certificates="+certs.CAOnly+"&tls-hostname=other.test"),
			wantErr: "x509: certificate is valid for localhost, not other.test"},
		{name: "own server checking clients, no certificate", uri: uri(ownPeer, "disk", "&tls-certificates="+certs.CAOnly),
			wantErr: "remote error: tls: certificate required|(the server hung up after the TLS handshake: does it want a client certificate?)"},
		{name: "own server without TLS", uri: uri(ownPlain, "disk", "&tls-certificates="+certs.CAOnly),
			wantErr: "nbd: the server does not offer TLS: it refused NBD_OPT_STARTTLS with NBD_REP_ERR_POLICY (TLS is off on this server), and TLS is required"},
		{name: "nbdkit, wrong CA", uri: uri(kit.Socket, "", "&tls-certificates="+certs.Stranger),
			wantErr: "x509: certificate signed by unknown authority"},
		{name: "nbdkit checking clients, no certificate", uri: uri(kitPeer.Socket, "", "&tls-certificates="+certs.CAOnly),
			wantErr: "remote error: tls: |(the server hung up after the TLS handshake: does it want a client certificate?)"},
		{name: "nbdkit without TLS", uri: uri(kitPlain.Socket, "", "&tls-certificates="+certs.CAOnly),
			wantErr: "nbd: the server does not offer TLS: it refused NBD_OPT_STARTTLS with NBD_REP_ERR_"},

		{name: "no CA and no name", uri: uri(own, "disk", "&tls-certificates="+noCA),
			wantErr: "TLS: over a Unix socket there is no host name to check the server's certificate against, and " + noCA + " has no ca-cert.pem: give tls-hostname=NAME"},
		{name: "default directory, empty", uri: uri(own, "disk", ""),
			wantErr: "and " + DefaultTLSCertificates() + " has no ca-cert.pem: give tls-hostname=NAME"},
		{name: "key readable by others", uri: uri(own, "disk", "&tls-certificates="+openKey),
			wantErr: "TLS: " + openKey + "/client-key.pem: other users may read the private key (mode 0644): chmod 600 " + openKey + "/client-key.pem"},
		{name: "certificate without its key", uri: uri(own, "disk", "&tls-certificates="+certOnly),
			wantErr: "TLS: " + certOnly + "/client-cert.pem without client-key.pem"},
		{name: "no such directory", uri: uri(own, "disk", "&tls-certificates="+noCA+"/nope"),
			wantErr: "TLS: tls-certificates=" + noCA + "/nope: stat " + noCA + "/nope: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := ParseSpec(tt.uri)
			if err != nil {
				t.Fatal(err)
			}
			o, err := OpenSource(spec, OpenOptions{BlockSize: 512})
			if tt.wantErr != "" {
				if err == nil {
					o.Source.Close()
					t.Fatalf("OpenSource(%s) succeeded, want %q", tt.uri, tt.wantErr)
				}
				if !containsOneOf(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), spec.String()+": ") {
					t.Fatalf("OpenSource(%s):\n%v\nwant one line starting with the URI and containing %q", tt.uri, err, tt.wantErr)
				}
				t.Log(strings.TrimPrefix(err.Error(), spec.String()+": "))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer o.Source.Close()
			roundTrip(t, o.Source, 8192)
		})
	}
}

// containsOneOf reports whether s contains one of the |-separated wants.
func containsOneOf(s, wants string) bool {
	for _, w := range strings.Split(wants, "|") {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// roundTrip writes a block at off through src and reads it back.
func roundTrip(t *testing.T, src sources.Source, off int64) {
	t.Helper()
	p := bytes.Repeat([]byte(fmt.Sprintf("%08d", off)), 512)
	if _, err := src.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if _, err := src.ReadAt(got, off); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read back at %d: %v, equal %v", off, err, bytes.Equal(got, p))
	}
}

// TestOpenRemoteTLSRestart kills nbdkit --tls=require under an open
// nbds+unix:// source and starts it again: the source reconnects over TLS
// and carries on.
func TestOpenRemoteTLSRestart(t *testing.T) {
	certs := tlstest.Make(t)
	kit := nbdkitTLS(t, "--tls=require", "--tls-certificates="+certs.Server, "--tls-verify-peer")
	spec, err := ParseSpec("nbds+unix:///?socket=" + kit.Socket + "&tls-certificates=" + certs.Client + "&tls-hostname=localhost")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	logf := func(format string, args ...any) {
		mu.Lock()
		lines = append(lines, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	o, err := OpenSource(spec, OpenOptions{BlockSize: 512, Logf: logf, RemoteRetry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Source.Close()
	roundTrip(t, o.Source, 0)
	kit.Kill()
	kit.Start()
	// nbdkit's memory is new: write again, then read back.
	roundTrip(t, o.Source, 4096)
	mu.Lock()
	log := strings.Join(lines, "\n")
	mu.Unlock()
	if !strings.Contains(log, "reconnected after") {
		t.Errorf("log:\n%s", log)
	}
}
