package ublk

import (
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
)

// observed describes request d of queue qid, taken at start, whose result
// was res (bytes or 0, or a negative errno), in the NBD server's terms;
// ok is false for an operation nbdloop does not serve (WRITE_SAME).
func observed(qid uint16, d *ioDesc, start time.Time, res int32) (r request.Request, ok bool) {
	switch d.op() {
	case opRead:
		r.Op = request.OpRead
	case opWrite:
		r.Op = request.OpWrite
	case opFlush:
		r.Op = request.OpFlush
	case opDiscard:
		r.Op = request.OpTrim
	case opWriteZeroes:
		r.Op = request.OpZero
		if d.flags()&ioFlagNoUnmap != 0 {
			r.Flags |= request.FlagNoHole
		}
	default:
		return r, false
	}
	if d.flags()&ioFlagFUA != 0 {
		r.Flags |= request.FlagFUA
	}
	if r.Op != request.OpFlush {
		r.Offset, r.Length = d.startSector<<9, uint64(d.nrSectors)<<9
	}
	r.Conn, r.Start, r.Latency = int(qid), start, time.Since(start)
	if res < 0 {
		r.Error = uint32(-res)
	}
	return r, true
}
