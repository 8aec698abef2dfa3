package attach

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nbdloop/nbdloop/nbd"
)

// The files of a TLS certificate directory, in nbdkit's layout
// (nbdkit-tls(1)).
const (
	tlsCACert     = "ca-cert.pem"     // the CA that signs client certificates (--tls-verify-peer)
	tlsServerCert = "server-cert.pem" // the server's certificate (and its chain)
	tlsServerKey  = "server-key.pem"  // its private key, readable by its owner alone
	tlsCRL        = "ca-crl.pem"      // nbdkit's revocation list, which nbdloop does not read
)

// DefaultTLSCertificates is the directory nbdloop serve reads its
// certificate from without --tls-certificates: /etc/nbdloop/pki for root,
// and nbdloop/pki in the user's configuration directory
// ($XDG_CONFIG_HOME, else ~/.config) for other users, as nbdkit reads
// /etc/pki/nbdkit or ~/.config/pki/nbdkit.
func DefaultTLSCertificates() string {
	if os.Geteuid() == 0 {
		return "/etc/nbdloop/pki"
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "nbdloop", "pki")
	}
	return "/etc/nbdloop/pki"
}

// DefaultTLSMode is the TLS mode when --tls is not given, chosen as nbdkit
// chooses it: on (offered, not required) when dir was given or the
// default directory holds a server certificate, off otherwise.
func DefaultTLSMode(dir string) nbd.TLSMode {
	if dir != "" {
		return nbd.TLSOn
	}
	if _, err := os.Stat(filepath.Join(DefaultTLSCertificates(), tlsServerCert)); err == nil {
		return nbd.TLSOn
	}
	return nbd.TLSOff
}

// serverTLSConfig loads the TLS configuration of nbdloop serve from dir:
// server-cert.pem and server-key.pem, which no user but its owner may
// read or write, and with verifyPeer ca-cert.pem, against which every
// client must then present a certificate. TLS 1.2 is the oldest version
// accepted. Errors name the file and the fix.
func serverTLSConfig(dir string, verifyPeer bool) (*tls.Config, error) {
	keyPath := filepath.Join(dir, tlsServerKey)
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("TLS: %w (--tls-certificates names the directory of %s, %s and %s)", err, tlsCACert, tlsServerCert, tlsServerKey)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("TLS: %s: other users may read the private key (mode %04o): chmod 600 %s", keyPath, perm, keyPath)
	}
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, tlsServerCert), keyPath)
	if err != nil {
		return nil, fmt.Errorf("TLS: %s: %w", dir, err)
	}
	// Full-size records from the first byte: NBD replies are bulk data,
	// not a page whose first bytes should reach a browser early.
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12, DynamicRecordSizingDisabled: true}
	if !verifyPeer {
		return cfg, nil
	}
	if _, err := os.Stat(filepath.Join(dir, tlsCRL)); err == nil {
		return nil, fmt.Errorf("TLS: %s: certificate revocation lists are not supported, and serving with it ignored would let revoked clients in: remove it, or reissue the CA", filepath.Join(dir, tlsCRL))
	}
	caPath := filepath.Join(dir, tlsCACert)
	pem, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("TLS: --tls-verify-peer checks clients against %s: %w", tlsCACert, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS: %s: no PEM certificate in it", caPath)
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = pool
	return cfg, nil
}

// describeTLS is the log line that says how nbdloop serve uses TLS.
func describeTLS(nc NetConfig) string {
	switch {
	case nc.TLS == nbd.TLSOff:
		return "TLS off"
	case nc.TLSVerifyPeer:
		return fmt.Sprintf("TLS %s with the certificate in %s; clients must present a certificate signed by its %s", nc.TLS, nc.tlsDir(), tlsCACert)
	}
	return fmt.Sprintf("TLS %s with the certificate in %s", nc.TLS, nc.tlsDir())
}

// tlsDir is the certificate directory nc uses.
func (nc *NetConfig) tlsDir() string {
	if nc.TLSCertificates != "" {
		return nc.TLSCertificates
	}
	return DefaultTLSCertificates()
}

// validateTLS checks the TLS flags against each other.
func (nc *NetConfig) validateTLS() error {
	if nc.TLSVerifyPeer && nc.TLS == nbd.TLSOff {
		return errors.New("--tls-verify-peer needs TLS: add --tls=require")
	}
	return nil
}
