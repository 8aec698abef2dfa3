package nbd

import (
	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// The base:allocation metadata context: its name and the ID it gets when
// a client selects it.
const (
	baseAllocation   = "base:allocation"
	baseAllocationID = 1
)

// maxExtents bounds the extents of one block status reply (the protocol
// asks for at most 2^20): a client asks again from where the reply ended.
// It bounds the work of one request on a badly fragmented source too.
const maxExtents = 16 << 10

// stateFlags returns the base:allocation flags of an extent kind.
func stateFlags(k sources.ExtentKind) uint32 {
	switch k {
	case sources.ExtentHole:
		return StateHole | StateZero
	case sources.ExtentZero:
		return StateZero
	}
	return 0
}

// blockStatus serves NBD_CMD_BLOCK_STATUS and returns the NBD error it
// replied with. The reply is one block status chunk for base:allocation
// (NBD_REPLY_TYPE_BLOCK_STATUS, or NBD_REPLY_TYPE_BLOCK_STATUS_EXT with
// extended headers), the Source's extents of [offset, offset+length) with
// neighbours of the same flags merged: at most maxExtents of them, or one
// with NBD_CMD_FLAG_REQ_ONE. A request without base:allocation selected,
// of length 0 or past the end fails with EINVAL. A Source that fails
// after reporting some extents gets a reply with those.
func (c *conn) blockStatus(req *RequestHeader) uint32 {
	s := c.s
	if !c.alloc || req.Length == 0 || req.Offset > s.size || req.Length > s.size-req.Offset {
		c.sendError(errInval, req, false, 0)
		return errInval
	}
	limit := maxExtents
	if req.Flags&request.FlagReqOne != 0 {
		limit = 1
	}
	f := c.chunks
	buf := s.pool.get(f.blockStatusChunkSize(limit))
	descs := buf.b[f.blockStatusChunkSize(0):]
	size := f.extentSize()
	n := 0
	var lastFlags uint32
	var lastLen uint64
	add := func(e sources.Extent) bool {
		fl := stateFlags(e.Kind)
		if n > 0 && fl == lastFlags {
			// The extents lie inside the request, whose length
			// fits the descriptor's, and so does their sum.
			lastLen += uint64(e.Length)
			f.putExtent(descs[size*(n-1):], lastLen, fl)
			return true
		}
		if n == limit {
			return false
		}
		lastFlags, lastLen = fl, uint64(e.Length)
		f.putExtent(descs[size*n:], lastLen, fl)
		n++
		return true
	}
	if !s.caps.Parallel {
		s.serial.Lock()
	}
	err := sources.Extents(s.src, int64(req.Offset), int64(req.Length), add)
	if !s.caps.Parallel {
		s.serial.Unlock()
	}
	if n == 0 {
		s.pool.put(buf)
		code := ErrorCode(err)
		if code == 0 {
			code = errIO // a Source that reported nothing and no error
		}
		c.sendError(code, req, false, 0)
		return code
	}
	buf.b = buf.b[:f.blockStatusChunkSize(n)]
	f.putBlockStatusHeader(buf.b, req, baseAllocationID, n)
	c.send(outFrame{buf: buf})
	return 0
}
