package nbd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

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

// TestTLSTransportHold: a tlsTransport writes each record as it comes,
// except between Hold and Release, when it gathers them and writes them
// once tlsBatch bytes are gathered, at Release, or at Close.
func TestTLSTransportHold(t *testing.T) {
	type step struct {
		hold    bool  // Hold before the writes
		writes  []int // record sizes
		release bool  // Release after the writes
		close   bool  // Close after the writes
		want    int   // bytes the peer can read then
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"not held", []step{{writes: []int{100, 16 << 10}, want: 100 + 16<<10}}},
		{"held", []step{{hold: true, writes: []int{100, 200, 300}, want: 0}, {release: true, want: 600}}},
		{"held past the batch", []step{
			{hold: true, writes: []int{tlsBatch - 1}, want: 0},
			{writes: []int{1}, want: tlsBatch},
			{writes: []int{10}, want: 0},
			{release: true, want: 10},
		}},
		{"released, then each record", []step{
			{hold: true, writes: []int{10}, release: true, want: 10},
			{writes: []int{20}, want: 20},
		}},
		{"closed while held", []step{{hold: true, writes: []int{10, 20}, close: true, want: 30}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := socketPair(t)
			tr, ok := newTLSTransport(a).(*tlsTransport)
			if !ok {
				t.Fatal("newTLSTransport did not wrap a Unix socket")
			}
			for i, st := range tt.steps {
				if st.hold {
					tr.Hold()
				}
				for _, n := range st.writes {
					if _, err := tr.Write(make([]byte, n)); err != nil {
						t.Fatalf("step %d: Write(%d bytes) = %v", i, n, err)
					}
				}
				if st.release {
					if err := tr.Release(); err != nil {
						t.Fatalf("step %d: Release = %v", i, err)
					}
				}
				if st.close {
					tr.Close()
				}
				if got := readable(t, b); got != st.want {
					t.Errorf("step %d: the peer could read %d bytes, want %d", i, got, st.want)
				}
			}
		})
	}
}

// readable reads what c holds now, waiting briefly for it.
func readable(t *testing.T, c net.Conn) int {
	t.Helper()
	total := 0
	buf := make([]byte, 256<<10)
	for {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := c.Read(buf)
		total += n
		if err != nil {
			return total
		}
	}
}
