package nbd

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveForTest runs ServeListeners on ln with opts until the test ends.
func serveForTest(t *testing.T, ln net.Listener, opts ListenOptions) *lineLog {
	t.Helper()
	var log lineLog
	opts.Logf = log.logf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListeners(ctx, []net.Listener{ln}, newTestExports(t), opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeListeners = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeListeners did not return after cancel")
		}
	})
	return &log
}

// greeted reports whether a new connection to addr gets the server's
// greeting (true) or is closed before it (false).
func greeted(t *testing.T, network, addr string) bool {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var g [18]byte
	_, err = io.ReadFull(c, g[:])
	switch {
	case err == nil:
		return true
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return false
	}
	t.Fatalf("reading the greeting: %v", err)
	return false
}

// TestMaxClients: with room for two clients, one in the transmission phase
// and one still in the handshake fill it; a third is closed before the
// greeting, with a log line; once one leaves, a new client gets in.
func TestMaxClients(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	log := serveForTest(t, ln, ListenOptions{MaxClients: 2})

	a := dialGo(t, "tcp", addr, "")
	handshaking, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer handshaking.Close()
	var g [18]byte
	handshaking.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(handshaking, g[:]); err != nil {
		t.Fatalf("the second client got no greeting: %v", err)
	}
	for i := 0; i < 3; i++ {
		if greeted(t, "tcp", addr) {
			t.Fatalf("client %d past the limit of 2 was greeted", 3+i)
		}
	}
	if !strings.Contains(log.String(), "refused: the limit of clients connected at once (2) is reached") {
		t.Errorf("no log line for the refused client:\n%s", log)
	}
	roundTrip(t, a, 0, []byte("still served"))

	a.Close()
	// The slot comes back once the server has seen a leave: retry.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := Dial(context.Background(), "tcp", addr, ClientOptions{Export: "disk"})
		if err == nil {
			defer b.Close()
			if err := b.Write([]byte("in after a left"), 512, false); err != nil {
				t.Fatalf("the client let in after one left: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no client let in after one left: %v\n%s", err, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hiddenRaw is a listener whose connections hide their syscall.Conn, as
// a TLS connection does: Serve reads and writes them through Read and
// Write.
type hiddenRaw struct{ net.Listener }

func (l hiddenRaw) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}

// TestIdleTimeout: a client that sends nothing is disconnected once the
// idle timeout has passed, with a log line; one that keeps sending
// requests is not. Over TCP and Unix sockets (raw system calls) and over a
// connection read through its Read method (as under TLS).
func TestIdleTimeout(t *testing.T) {
	const idle = 400 * time.Millisecond
	for _, tc := range []struct {
		name    string
		network string
		wrap    func(net.Listener) net.Listener
	}{
		{"tcp", "tcp", func(ln net.Listener) net.Listener { return ln }},
		{"unix", "unix", func(ln net.Listener) net.Listener { return ln }},
		{"read through Read", "tcp", func(ln net.Listener) net.Listener { return hiddenRaw{ln} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if tc.network == "unix" {
				addr = filepath.Join(t.TempDir(), "nbd.sock")
			}
			ln, err := net.Listen(tc.network, addr)
			if err != nil {
				t.Fatal(err)
			}
			addr = ln.Addr().String()
			log := serveForTest(t, tc.wrap(ln), ListenOptions{IdleTimeout: idle})

			// Taken before the handshake: the server's idle time starts
			// at its last reply, which the client sees a little later.
			idleSince := time.Now()
			idler := dialGo(t, tc.network, addr, "small")
			busy := dialGo(t, tc.network, addr, "disk")
			ended := make(chan time.Duration, 1)
			go func() {
				var b [1]byte
				idler.SetReadDeadline(time.Now().Add(10 * time.Second))
				idler.Read(b[:])
				ended <- time.Since(idleSince)
			}()
			for time.Since(idleSince) < 3*idle {
				roundTrip(t, busy, 0, []byte("busy"))
				time.Sleep(idle / 8)
			}
			select {
			case d := <-ended:
				if d < idle {
					t.Errorf("the idle client was disconnected after %v, before the %v timeout", d, idle)
				}
			default:
				t.Fatalf("the idle client is still connected after %v:\n%s", 3*idle, log)
			}
			roundTrip(t, busy, 0, []byte("still busy"))
			if text := log.String(); !strings.Contains(text, `export "small": idle for 400ms, disconnected`) || strings.Contains(text, `export "disk": idle`) {
				t.Errorf("log: want the idle client's line and not the busy one's:\n%s", text)
			}
		})
	}
}
