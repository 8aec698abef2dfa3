package nbd

import (
	"bufio"
	"net"
	"sync"
	"syscall"
)

// tlsTransport is the connection a TLS session runs over: c, whose socket
// it reads and writes with raw system calls (rawSocket), reads going
// through a buffer, so that one read(2) takes in every TLS record the
// client has sent, where crypto/tls asks for about one record at a time.
// Between Hold and Release, records are gathered and written together,
// up to tlsBatch bytes at a time. Deadlines and addresses are c's.
type tlsTransport struct {
	net.Conn
	raw *rawSocket
	br  *bufio.Reader

	mu   sync.Mutex // Write, Release and Close: crypto/tls writes alerts from any goroutine
	held bool
	out  []byte // records gathered while held
	one  [1][]byte
}

// tlsBatch is how many bytes of records a held tlsTransport gathers before
// it writes them: a few records per system call, not a whole reply, so
// that the client decrypts the first while the server seals the next.
const tlsBatch = 64 << 10

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
// record, or a few, at a time. While held, p is gathered, and written once
// tlsBatch bytes are.
func (t *tlsTransport) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.held {
		if err := t.write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	t.out = append(t.out, p...)
	if len(t.out) >= tlsBatch {
		if err := t.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Hold makes Write gather records until Release: the server holds the
// transport while it writes a batch of replies.
func (t *tlsTransport) Hold() {
	t.mu.Lock()
	t.held = true
	t.mu.Unlock()
}

// Release writes the records gathered since Hold; Write writes each
// record again.
func (t *tlsTransport) Release() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.held = false
	return t.flush()
}

// Close writes the records gathered (crypto/tls's close_notify among them)
// and closes the connection.
func (t *tlsTransport) Close() error {
	t.mu.Lock()
	t.held = false
	t.flush()
	t.mu.Unlock()
	return t.Conn.Close()
}

func (t *tlsTransport) flush() error {
	if len(t.out) == 0 {
		return nil
	}
	err := t.write(t.out)
	t.out = t.out[:0]
	return err
}

func (t *tlsTransport) write(p []byte) error {
	t.one[0] = p
	err := t.raw.WriteBuffers(t.one[:])
	t.one[0] = nil
	return err
}
