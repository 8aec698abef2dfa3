package tlstest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

// TestMake checks the certificates against each other as a TLS peer
// would: the server's for localhost and 127.0.0.1, the client's for client
// authentication, the stranger's by neither CA, and the keys private.
func TestMake(t *testing.T) {
	c := Make(t)
	pool := func(dir string) *x509.CertPool {
		b, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(b) {
			t.Fatalf("%s/ca-cert.pem: no certificate", dir)
		}
		return p
	}
	leaf := func(dir, name string) *x509.Certificate {
		kp, err := tls.LoadX509KeyPair(filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return kp.Leaf
	}
	server, client, stranger := leaf(c.Server, "server"), leaf(c.Client, "client"), leaf(c.Stranger, "client")
	tests := []struct {
		name  string
		cert  *x509.Certificate
		roots *x509.CertPool
		host  string
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"server for localhost", server, pool(c.CAOnly), "localhost", x509.ExtKeyUsageServerAuth, true},
		{"server for 127.0.0.1", server, pool(c.Client), "127.0.0.1", x509.ExtKeyUsageServerAuth, true},
		{"server for another name", server, pool(c.CAOnly), "example.com", x509.ExtKeyUsageServerAuth, false},
		{"server by the other CA", server, pool(c.Stranger), "localhost", x509.ExtKeyUsageServerAuth, false},
		{"client", client, pool(c.Server), "", x509.ExtKeyUsageClientAuth, true},
		{"stranger", stranger, pool(c.Server), "", x509.ExtKeyUsageClientAuth, false},
	}
	for _, tt := range tests {
		_, err := tt.cert.Verify(x509.VerifyOptions{Roots: tt.roots, DNSName: tt.host, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
		if (err == nil) != tt.ok {
			t.Errorf("%s: Verify = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	if got := client.Subject.String(); got != ClientSubject {
		t.Errorf("client subject %q, want %q", got, ClientSubject)
	}
	fi, err := os.Stat(filepath.Join(c.Server, "server-key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("server-key.pem: %v, %v; want mode 0600", fi.Mode(), err)
	}
}
