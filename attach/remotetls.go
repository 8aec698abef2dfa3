package attach

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/nbdloop/nbdloop/nbd"
)

// The files of a client's TLS certificate directory, in libnbd's layout
// (the tls-certificates parameter of an nbds:// URI).
const (
	tlsClientCert = "client-cert.pem" // the client's certificate, for servers that check clients
	tlsClientKey  = "client-key.pem"  // its private key, readable by its owner alone
)

// clientTLSConfig is the TLS configuration of the nbds:// URI u, from its
// tls- parameters:
//
//   - The directory is tls-certificates=DIR, or DefaultTLSCertificates
//     (the directory nbdloop serve reads), which may be missing.
//   - The server's certificate is checked against the directory's
//     ca-cert.pem when it has one, else against the system's CAs.
//   - client-cert.pem with client-key.pem, when there, is given to servers
//     that ask for a certificate; a key that other users may read is
//     refused, as nbdloop serve refuses its own.
//   - The name checked is tls-hostname=NAME, else the URI's host. Over a
//     Unix socket without tls-hostname there is no name: a certificate
//     signed by the directory's ca-cert.pem is taken whatever names it
//     carries (as libnbd and qemu do), and with the system's CAs, which
//     sign certificates for anyone, the URI is refused.
//   - tls-verify-peer=false checks nothing: any server is taken.
//
// Errors are one line that names the file and the fix.
func clientTLSConfig(u nbd.URI) (*tls.Config, error) {
	dir, given := u.TLSCertificates, u.TLSCertificates != ""
	if !given {
		dir = DefaultTLSCertificates()
	}
	if given {
		if fi, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("TLS: tls-certificates=%s: %w", dir, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("TLS: tls-certificates=%s is not a directory (of %s, %s and %s)", dir, tlsCACert, tlsClientCert, tlsClientKey)
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: u.TLSNoVerify}
	if err := loadClientCert(cfg, dir); err != nil {
		return nil, err
	}
	if u.TLSNoVerify {
		return cfg, nil
	}
	if _, err := os.Stat(filepath.Join(dir, tlsCRL)); err == nil {
		return nil, fmt.Errorf("TLS: %s: certificate revocation lists are not supported, and checking the server with it ignored would take a revoked one: remove it, or reissue the CA", filepath.Join(dir, tlsCRL))
	}
	caPath := filepath.Join(dir, tlsCACert)
	pem, err := os.ReadFile(caPath)
	switch {
	case err == nil:
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS: %s: no PEM certificate in it", caPath)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("TLS: %w", err)
	}
	cfg.ServerName = u.TLSHostname
	if cfg.ServerName == "" && u.Network == "tcp" {
		if cfg.ServerName, _, err = net.SplitHostPort(u.Address); err != nil {
			return nil, fmt.Errorf("TLS: %s: %w", u.Address, err)
		}
	}
	if cfg.ServerName != "" {
		return cfg, nil
	}
	if cfg.RootCAs == nil {
		return nil, fmt.Errorf("TLS: over a Unix socket there is no host name to check the server's certificate against, and %s has no %s: give tls-hostname=NAME (a name in the server's certificate), or tls-certificates=DIR with the CA that signs it", dir, tlsCACert)
	}
	cfg.InsecureSkipVerify = true // the chain is checked below, without a name
	roots := cfg.RootCAs
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyChain(cs.PeerCertificates, roots)
	}
	return cfg, nil
}

// verifyChain checks that certs, the server's certificate and the chain
// it sent, lead to one of roots, for a server's use.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool) error {
	if len(certs) == 0 {
		return errors.New("the server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("tls: failed to verify certificate: %w", err)
	}
	return nil
}

// loadClientCert adds dir's client-cert.pem and client-key.pem to cfg
// when both are there.
func loadClientCert(cfg *tls.Config, dir string) error {
	certPath, keyPath := filepath.Join(dir, tlsClientCert), filepath.Join(dir, tlsClientKey)
	_, certErr := os.Stat(certPath)
	fi, keyErr := os.Stat(keyPath)
	switch {
	case certErr != nil && keyErr != nil:
		return nil
	case keyErr != nil:
		return fmt.Errorf("TLS: %s without %s: %w", certPath, tlsClientKey, keyErr)
	case certErr != nil:
		return fmt.Errorf("TLS: %s without %s: %w", keyPath, tlsClientCert, certErr)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("TLS: %s: other users may read the private key (mode %04o): chmod 600 %s", keyPath, perm, keyPath)
	}
	kp, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return fmt.Errorf("TLS: %s: %w", dir, err)
	}
	cfg.Certificates = []tls.Certificate{kp}
	return nil
}
