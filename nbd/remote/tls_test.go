package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tlstest"
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
)

// TestReconnectTLS kills and restarts a server that requires TLS: the
// Source reconnects with a new TLS handshake and carries on, and a
// server that comes back without TLS is not taken.
func TestReconnectTLS(t *testing.T) {
	certs := tlstest.Make(t)
	kp, err := tls.LoadX509KeyPair(filepath.Join(certs.Server, "server-cert.pem"), filepath.Join(certs.Server, "server-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(certs.CAOnly, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	m, err := sources.NewMemory(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv := newOwnTLSServer(t, m, &tls.Config{Certificates: []tls.Certificate{kp}})
	u := srv.uri()
	u.TLS = true
	var log logLines
	s := openFast(t, u, Options{Logf: log.logf, TLSConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}})
	defer s.Close()
	p := bytes.Repeat([]byte("over TLS"), 512)
	if _, err := s.WriteAt(p, 8192); err != nil {
		t.Fatal(err)
	}

	srv.kill()
	srv.start()
	got := make([]byte, len(p))
	if _, err := s.ReadAt(got, 8192); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read after the restart: %v, equal %v", err, bytes.Equal(got, p))
	}
	srv.mu.Lock()
	seen, n := strings.Join(srv.seen, "; "), len(srv.seen)
	srv.mu.Unlock()
	if n != 2 || strings.Contains(seen, "no TLS") {
		t.Errorf("the server saw connections %q, want two over TLS", seen)
	}
	if !log.has("reconnected after") {
		t.Errorf("log:\n%s", log.String())
	}

	// Back without TLS: the Source keeps trying and says why.
	srv.kill()
	srv.mu.Lock()
	srv.tls = nil
	srv.mu.Unlock()
	srv.start()
	deadline := time.Now().Add(10 * time.Second)
	for !log.has("it refused NBD_OPT_STARTTLS with NBD_REP_ERR_POLICY") && time.Now().Before(deadline) {
		go s.ReadAt(make([]byte, 512), 0) // notices the lost connection
		time.Sleep(50 * time.Millisecond)
	}
	if !log.has("reconnecting: nbd: the server does not offer TLS: it refused NBD_OPT_STARTTLS with NBD_REP_ERR_POLICY") {
		t.Errorf("log:\n%s", log.String())
	}
}

// TestOpenTLSNeedsConfig holds that nbds:// is not dialled without a TLS
// configuration.
func TestOpenTLSNeedsConfig(t *testing.T) {
	_, err := Open(context.Background(), nbd.URI{Network: "unix", Address: "/nonexistent", TLS: true}, Options{})
	if err == nil || !strings.Contains(err.Error(), "TLS is required and no TLS configuration was given") || errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open: %v", err)
	}
}
