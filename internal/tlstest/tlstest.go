package tlstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// Certs are directories of certificates made by Make. A CA signs a server
// certificate for localhost and 127.0.0.1 and a client certificate;
// another CA signs another client certificate.
type Certs struct {
	// Server is a server's directory: ca-cert.pem, server-cert.pem and
	// server-key.pem (mode 0600).
	Server string
	// Client is a client's directory with a certificate: ca-cert.pem,
	// client-cert.pem and client-key.pem, the certificate's subject being
	// ClientSubject.
	Client string
	// CAOnly is a client's directory without a certificate: ca-cert.pem
	// alone, enough to check the server.
	CAOnly string
	// Stranger is a client's directory from the other CA: its ca-cert.pem
	// does not sign the server's certificate, and the server's CA does not
	// sign its client-cert.pem.
	Stranger string
}

// ClientSubject is the subject of Certs.Client's certificate, as Go's
// pkix.Name prints it.
const ClientSubject = "CN=client.test,O=nbdloop tests"

// Make creates the certificates under a temporary directory of t, with
// ECDSA keys (quick to make) valid for two days.
func Make(t testing.TB) Certs {
	t.Helper()
	tooltest.Require(t, "certtool")
	root := t.TempDir()
	c := Certs{
		Server:   filepath.Join(root, "server"),
		Client:   filepath.Join(root, "client"),
		CAOnly:   filepath.Join(root, "ca-only"),
		Stranger: filepath.Join(root, "stranger"),
	}
	work := filepath.Join(root, "work")
	for _, d := range []string{c.Server, c.Client, c.CAOnly, c.Stranger, work} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	w := func(name string) string { return filepath.Join(work, name) }
	ca := newCA(t, work, "ca", "nbdloop test CA")
	key(t, w("server-key.pem"))
	sign(t, ca, w("server-key.pem"), w("server-cert.pem"), w("server.info"),
		"organization = nbdloop tests\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\n")
	key(t, w("client-key.pem"))
	sign(t, ca, w("client-key.pem"), w("client-cert.pem"), w("client.info"),
		"organization = nbdloop tests\ncn = client.test\ntls_www_client\nencryption_key\nsigning_key\n")
	other := newCA(t, work, "other-ca", "another CA")
	key(t, w("other-client-key.pem"))
	sign(t, other, w("other-client-key.pem"), w("other-client-cert.pem"), w("other-client.info"),
		"organization = strangers\ncn = stranger.test\ntls_www_client\nencryption_key\nsigning_key\n")
	for _, cp := range [][2]string{
		{ca.cert, filepath.Join(c.Server, "ca-cert.pem")},
		{w("server-cert.pem"), filepath.Join(c.Server, "server-cert.pem")},
		{w("server-key.pem"), filepath.Join(c.Server, "server-key.pem")},
		{ca.cert, filepath.Join(c.Client, "ca-cert.pem")},
		{w("client-cert.pem"), filepath.Join(c.Client, "client-cert.pem")},
		{w("client-key.pem"), filepath.Join(c.Client, "client-key.pem")},
		{ca.cert, filepath.Join(c.CAOnly, "ca-cert.pem")},
		{other.cert, filepath.Join(c.Stranger, "ca-cert.pem")},
		{w("other-client-cert.pem"), filepath.Join(c.Stranger, "client-cert.pem")},
		{w("other-client-key.pem"), filepath.Join(c.Stranger, "client-key.pem")},
	} {
		b, err := os.ReadFile(cp[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cp[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// ca is a certificate authority's files.
type ca struct{ key, cert string }

func newCA(t testing.TB, dir, name, cn string) ca {
	c := ca{key: filepath.Join(dir, name+"-key.pem"), cert: filepath.Join(dir, name+"-cert.pem")}
	key(t, c.key)
	info := filepath.Join(dir, name+".info")
	write(t, info, "cn = "+cn+"\nca\ncert_signing_key\nexpiration_days = 2\n")
	run(t, "certtool", "--generate-self-signed", "--load-privkey", c.key, "--template", info, "--outfile", c.cert)
	return c
}

func key(t testing.TB, path string) {
	run(t, "certtool", "--generate-privkey", "--key-type", "ecdsa", "--outfile", path)
}

// sign issues the certificate of the key at keyPath, described by the
// certtool template tmpl (written to info), signed by c.
func sign(t testing.TB, c ca, keyPath, certPath, info, tmpl string) {
	write(t, info, tmpl+"expiration_days = 2\n")
	run(t, "certtool", "--generate-certificate", "--load-ca-certificate", c.cert, "--load-ca-privkey", c.key,
		"--load-privkey", keyPath, "--template", info, "--outfile", certPath)
}

func write(t testing.TB, path, s string) {
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
