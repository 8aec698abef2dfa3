package ublk

import (
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
)

// TestObserved: each ublk operation is described as the NBD server
// describes the request it stands for.
func TestObserved(t *testing.T) {
	start := time.Now().Add(-time.Millisecond)
	for _, c := range []struct {
		name string
		d    ioDesc
		res  int32
		want request.Request
		ok   bool
	}{
		{"read", ioDesc{opFlags: opRead, nrSectors: 8, startSector: 2}, 4096,
			request.Request{Conn: 1, Op: request.OpRead, Offset: 1024, Length: 4096}, true},
		{"write fua", ioDesc{opFlags: opWrite | ioFlagFUA, nrSectors: 1, startSector: 0}, 512,
			request.Request{Conn: 1, Op: request.OpWrite, Flags: request.FlagFUA, Length: 512}, true},
		{"write failed", ioDesc{opFlags: opWrite, nrSectors: 8, startSector: 8}, -int32(syscall.ENOSPC),
			request.Request{Conn: 1, Op: request.OpWrite, Offset: 4096, Length: 4096, Error: uint32(syscall.ENOSPC)}, true},
		{"flush", ioDesc{opFlags: opFlush, nrSectors: 0, startSector: 99}, 0,
			request.Request{Conn: 1, Op: request.OpFlush}, true},
		{"discard", ioDesc{opFlags: opDiscard, nrSectors: 16, startSector: 16}, 0,
			request.Request{Conn: 1, Op: request.OpTrim, Offset: 8192, Length: 8192}, true},
		{"write-zeroes, may unmap", ioDesc{opFlags: opWriteZeroes, nrSectors: 8}, 0,
			request.Request{Conn: 1, Op: request.OpZero, Length: 4096}, true},
		{"write-zeroes, no unmap", ioDesc{opFlags: opWriteZeroes | ioFlagNoUnmap, nrSectors: 8}, 0,
			request.Request{Conn: 1, Op: request.OpZero, Flags: request.FlagNoHole, Length: 4096}, true},
		{"write-same", ioDesc{opFlags: opWriteSame, nrSectors: 8}, -int32(syscall.EOPNOTSUPP), request.Request{}, false},
	} {
		r, ok := observed(1, &c.d, start, c.res)
		if ok != c.ok {
			t.Errorf("%s: ok %v, want %v", c.name, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		if r.Start != start || r.Latency < time.Millisecond {
			t.Errorf("%s: start %v, latency %v; want %v and at least 1ms", c.name, r.Start, r.Latency, start)
		}
		r.Start, r.Latency = time.Time{}, 0
		if r != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, r, c.want)
		}
	}
}
