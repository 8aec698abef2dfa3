package nbd

import (
	"bufio"
	"net"
	"syscall"
)

// tlsTransport is the connection a TLS session runs over: c, whose socket
// it reads and writes with raw system calls (rawSocket), reads going
// through a buffer, so that one read(2) takes in every TLS record the
// client has sent, where crypto/tls asks for about one record at a time.
// Deadlines, addresses and Close are c's.
type tlsTransport struct {
	net.Conn
	raw *rawSocket
	br  *bufio.Reader
	one [1][]byte
}

// tlsTransportSize is the read buffer of a tlsTransport: room for the
// records of several megabytes of WRITE payload.
const tlsTransportSize = 256 << 10

// newTLSTransport returns the transport for a TLS session over c: a
// tlsTransport, or c itself when c has no socket of its own.
func newTLSTransport(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	t := &tlsTransport{Conn: c, raw: newRawSocket(rc)}
	t.br = bufio.NewReaderSize(t.raw, tlsTransportSize)
	return t
}

func (t *tlsTransport) Read(p []byte) (int, error) { return t.br.Read(p) }

// Write writes every byte of p or fails: crypto/tls calls it with one
// record, or a few, at a time, from one goroutine at a time.
func (t *tlsTransport) Write(p []byte) (int, error) {
	t.one[0] = p
	err := t.raw.WriteBuffers(t.one[:])
	t.one[0] = nil
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
