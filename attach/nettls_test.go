package attach

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tlstest"
	"github.com/nbdloop/nbdloop/nbd"
)

// TestServerTLSConfig loads certificate directories made by certtool,
// good and broken, as nbdloop serve --tls-certificates does.
func TestServerTLSConfig(t *testing.T) {
	certs := tlstest.Make(t)
	// variant copies the server's directory and lets change break it.
	variant := func(change func(dir string)) string {
		dir := t.TempDir()
		for _, f := range []string{tlsCACert, tlsServerCert, tlsServerKey} {
			b, err := os.ReadFile(filepath.Join(certs.Server, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		change(dir)
		return dir
	}
	readableKey := variant(func(d string) { os.Chmod(filepath.Join(d, tlsServerKey), 0o640) })
	noCA := variant(func(d string) { os.Remove(filepath.Join(d, tlsCACert)) })
	withCRL := variant(func(d string) { os.WriteFile(filepath.Join(d, tlsCRL), nil, 0o644) })
	otherKey := variant(func(d string) {
		b, _ := os.ReadFile(filepath.Join(certs.Client, "client-key.pem"))
		os.WriteFile(filepath.Join(d, tlsServerKey), b, 0o600)
	})
	tests := []struct {
		name       string
		dir        string
		verifyPeer bool
		err        string // in the error, "" for none
	}{
		{"certificate and key", certs.Server, false, ""},
		{"client certificates checked", certs.Server, true, ""},
		{"no ca-cert.pem needed without --tls-verify-peer", noCA, false, ""},
		{"no ca-cert.pem with --tls-verify-peer", noCA, true, "TLS: --tls-verify-peer checks clients against ca-cert.pem: open "},
		{"key readable by the group", readableKey, false, "other users may read the private key (mode 0640): chmod 600 " + filepath.Join(readableKey, tlsServerKey)},
		{"missing directory", filepath.Join(certs.Server, "nope"), false, "no such file or directory (--tls-certificates names the directory of ca-cert.pem, server-cert.pem and server-key.pem)"},
		{"key of another certificate", otherKey, false, "private key does not match public key"},
		{"revocation list", withCRL, true, "ca-crl.pem: certificate revocation lists are not supported"},
		{"revocation list unused without --tls-verify-peer", withCRL, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := serverTLSConfig(tt.dir, tt.verifyPeer)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("serverTLSConfig = %v, want one line with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MinVersion != tls.VersionTLS12 || (cfg.ClientAuth == tls.RequireAndVerifyClientCert) != tt.verifyPeer || (cfg.ClientCAs != nil) != tt.verifyPeer {
				t.Errorf("config: min version %#x, client auth %v, client CAs %v", cfg.MinVersion, cfg.ClientAuth, cfg.ClientCAs != nil)
			}
		})
	}
}

// TestServerTLSVersions: a client that offers TLS 1.1 at most is refused;
// 1.2 and 1.3 are accepted.
func TestServerTLSVersions(t *testing.T) {
	certs := tlstest.Make(t)
	cfg, err := serverTLSConfig(certs.Server, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct {
		max uint16
		ok  bool
	}{{tls.VersionTLS11, false}, {tls.VersionTLS12, true}, {tls.VersionTLS13, true}} {
		s, c := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- tls.Server(s, cfg).Handshake(); s.Close() }()
		cerr := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: v.max}).Handshake()
		c.Close()
		serr := <-done
		if (serr == nil) != v.ok || (cerr == nil) != v.ok {
			t.Errorf("client up to %s: server %v, client %v; want ok=%v", tls.VersionName(v.max), serr, cerr, v.ok)
		}
	}
}

func TestNetConfigTLS(t *testing.T) {
	nc := NetConfig{Exports: []NetExport{{Config: NewConfig("memory:1M")}}, Unix: "/tmp/x.sock", TLSVerifyPeer: true}
	if err := nc.Validate(); err == nil || err.Error() != "--tls-verify-peer needs TLS: add --tls=require" {
		t.Errorf("--tls-verify-peer without TLS: %v", err)
	}
	nc.TLS = nbd.TLSRequire
	if err := nc.Validate(); err != nil {
		t.Errorf("--tls=require --tls-verify-peer: %v", err)
	}
	if m := DefaultTLSMode("/some/dir"); m != nbd.TLSOn {
		t.Errorf("DefaultTLSMode with a directory = %v, want on", m)
	}
}
