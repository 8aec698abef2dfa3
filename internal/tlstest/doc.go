// Package tlstest makes X.509 certificates for tests of TLS with certtool
// (GnuTLS), the tool nbdkit's documentation uses, laid out in the
// directories that nbdloop serve, nbdkit, libnbd (tls-certificates=) and
// qemu (tls-creds-x509 dir=) read. It is imported only from _test.go
// files.
//
// certtool must be installed (scripts/install-deps.sh, package
// gnutls-bin): a missing tool fails the test with internal/tooltest's
// message, it does not skip it.
package tlstest
