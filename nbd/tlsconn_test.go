package nbd

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tlstest"
)

// TestTLSBulk pipelines writes and reads of every size class through a
// TLS session on a socket (the server's tlsTransport and writeJoined):
// sectors and pages, whose replies are joined into shared TLS records,
// and requests over joinMax, written on their own. Every byte reads back.
func TestTLSBulk(t *testing.T) {
	certs := tlstest.Make(t)
	x := clientExports{"disk": memoryExport(t, "disk", 16<<20, false, 0)}
	conn, res := serveOneTLS(t, x, HandshakeOptions{TLS: TLSRequire, TLSConfig: serverTLS(t, certs.Server, false)})
	c, err := NewClient(context.Background(), conn, ClientOptions{Export: "disk", TLSConfig: clientTLS(t, certs.CAOnly)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := <-res; err != nil {
		t.Fatalf("server: %v", err)
	}
	sizes := []int{512, 4096, 4096, 65536, joinMax + 4096, 1 << 20}
	type piece struct {
		off  int64
		data []byte
	}
	var pieces []piece
	off := int64(0)
	for i := range 24 {
		n := sizes[i%len(sizes)]
		pieces = append(pieces, piece{off, bytes.Repeat([]byte(fmt.Sprintf("%02d", i)), n/2)})
		off += int64(n)
	}
	run := func(what string, f func(p piece) error) {
		var wg sync.WaitGroup
		errs := make(chan error, len(pieces))
		for _, p := range pieces {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(p); err != nil {
					errs <- fmt.Errorf("%s of %d bytes at %d: %w", what, len(p.data), p.off, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	run("write", func(p piece) error { return c.Write(p.data, p.off, false) })
	run("read", func(p piece) error {
		got := make([]byte, len(p.data))
		if err := c.Read(got, p.off); err != nil {
			return err
		}
		if !bytes.Equal(got, p.data) {
			return fmt.Errorf("data differs")
		}
		return nil
	})
}
