package nbd

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
)

// TestServerObserve checks the Request observed for each kind of request:
// the op, flags, range and connection number as sent, the error as
// replied, and a start time and latency that bracket the request.
func TestServerObserve(t *testing.T) {
	f := newFake(64 << 10)
	events := make(chan request.Request, 16)
	client, server := socketpair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := NewServer(f, Options{Observe: func(e request.Request) { events <- e }})
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(ctx, server, 3) }()
	h := &harness{t: t, client: client, done: done, cancel: cancel}

	tests := []struct {
		name    string
		req     RequestHeader
		payload []byte
		dataLen int
		errCode uint32
	}{
		{name: "read", req: RequestHeader{Op: request.OpRead, Cookie: 1, Offset: 4096, Length: 512}, dataLen: 512},
		{name: "write fua", req: RequestHeader{Op: request.OpWrite, Flags: request.FlagFUA, Cookie: 2, Offset: 8192, Length: 1024}, payload: make([]byte, 1024)},
		{name: "write enospc", req: RequestHeader{Op: request.OpWrite, Cookie: 3, Offset: 4096 * 3, Length: 4}, payload: make([]byte, 4), errCode: errNoSpc},
		{name: "flush", req: RequestHeader{Op: request.OpFlush, Cookie: 4}},
		{name: "trim", req: RequestHeader{Op: request.OpTrim, Cookie: 5, Offset: 0, Length: 4096}},
		{name: "zero no hole", req: RequestHeader{Op: request.OpZero, Flags: request.FlagNoHole, Cookie: 6, Offset: 512, Length: 512}},
		{name: "read past end", req: RequestHeader{Op: request.OpRead, Cookie: 7, Offset: 64 << 10, Length: 512}, errCode: errInval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			h.send(tt.req, tt.payload)
			r, _ := h.recv(map[uint64]int{tt.req.Cookie: tt.dataLen})
			if r.Error != tt.errCode {
				t.Fatalf("reply error = %d, want %d", r.Error, tt.errCode)
			}
			var e request.Request
			select {
			case e = <-events:
			case <-time.After(5 * time.Second):
				t.Fatal("nothing observed after the reply")
			}
			after := time.Now()
			want := request.Request{Conn: 3, Op: tt.req.Op, Flags: tt.req.Flags, Offset: tt.req.Offset, Length: tt.req.Length, Error: tt.errCode}
			got := e
			got.Start, got.Latency = time.Time{}, 0
			if got != want {
				t.Errorf("observed %+v, want %+v", got, want)
			}
			if e.Start.Before(before) || e.Start.After(after) {
				t.Errorf("Start = %v, want between %v and %v", e.Start, before, after)
			}
			if e.Latency < 0 || e.Start.Add(e.Latency).After(after) {
				t.Errorf("Latency = %v, want 0..%v", e.Latency, after.Sub(e.Start))
			}
		})
	}
	client.Close()
	if err := h.wait(); err != nil {
		t.Fatalf("ServeConn = %v, want nil", err)
	}
	select {
	case e := <-events:
		t.Errorf("unexpected observed request %+v", e)
	default:
	}
}

// BenchmarkServerRead4KObserved is BenchmarkServerRead4K with an observer
// that counts requests and bytes, as the stats filter does: it must stay at
// 0 allocs/op.
func BenchmarkServerRead4KObserved(b *testing.B) {
	var n, bytes atomic.Uint64
	benchmarkServerOpts(b, request.OpRead, 4096, Options{Observe: func(e request.Request) {
		n.Add(1)
		bytes.Add(uint64(e.Length))
	}}, false)
}
