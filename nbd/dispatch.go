package nbd

import (
	"io"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// handle serves one request; h splits READ replies into data and hole
// chunks (nil: never split), the calling goroutine's own.
func (c *conn) handle(j job, h *holeReader) {
	s := c.s
	req := j.req
	var code uint32
	switch {
	case j.fail != 0:
		if j.buf != nil {
			s.pool.put(j.buf)
		}
		code = j.fail
		c.sendError(code, &req, false, 0)
	case req.Op == request.OpRead:
		code = c.read(&req, h)
	case req.Op == request.OpBlockStatus:
		code = c.blockStatus(&req)
	default:
		code = c.modifyAndReply(j)
	}
	if s.opts.Observe != nil {
		s.opts.Observe(request.Request{
			Conn: c.id, Op: req.Op, Flags: req.Flags, Offset: req.Offset, Length: req.Length,
			Start: j.start, Latency: time.Since(j.start), Error: code,
		})
	}
}

// modifyAndReply serves every request but READ and returns the NBD error
// it replied with.
func (c *conn) modifyAndReply(j job) uint32 {
	s := c.s
	req := j.req
	var err error
	if req.Op != request.OpFlush && (req.Offset > s.size || req.Length > s.size-req.Offset) {
		err = syscall.EINVAL
	} else {
		if !s.caps.Parallel {
			s.serial.Lock()
		}
		if j.spliced {
			// readLoop wrote the payload (spliceWrite).
			err = j.werr
			if err == nil && req.Flags&request.FlagFUA != 0 {
				err = s.src.Flush()
			}
		} else {
			err = c.modify(req, j.buf)
		}
		if !s.caps.Parallel {
			s.serial.Unlock()
		}
	}
	if j.buf != nil {
		s.pool.put(j.buf)
	}
	code := ErrorCode(err)
	c.sendDone(code, &req)
	return code
}

func (c *conn) modify(req RequestHeader, buf *buffer) error {
	s := c.s
	if s.caps.ReadOnly && req.Op != request.OpFlush {
		return sources.ErrReadOnly
	}
	off, n := int64(req.Offset), int64(req.Length)
	switch req.Op {
	case request.OpWrite:
		if _, err := s.src.WriteAt(buf.b, off); err != nil {
			return err
		}
		if req.Flags&request.FlagFUA != 0 {
			return s.src.Flush()
		}
		return nil
	case request.OpFlush:
		return s.src.Flush()
	case request.OpTrim:
		if err := s.src.Trim(off, n); err != nil {
			return err
		}
	case request.OpZero:
		if err := s.src.Zero(off, n, req.Flags&request.FlagNoHole == 0); err != nil {
			return err
		}
	default:
		return syscall.EINVAL
	}
	if req.Flags&request.FlagFUA != 0 {
		return s.src.Flush()
	}
	return nil
}

// read serves a READ and returns the NBD error it replied with. With
// structured replies or extended headers, a range with holes is answered
// in data and hole chunks (readHoles), otherwise in one data chunk.
func (c *conn) read(req *RequestHeader, h *holeReader) uint32 {
	s := c.s
	if req.Offset > s.size || req.Length > s.size-req.Offset {
		c.sendError(errInval, req, false, 0)
		return errInval
	}
	if code, ok := c.readHoles(req, h); ok {
		return code
	}
	if s.region != nil && c.raw != nil && req.Length > inlineMax {
		if fd, off, ok := s.region.RAMRegion(int64(req.Offset), int64(req.Length)); ok {
			f := outFrame{file: fileRegion{fd: fd, off: off, n: int(req.Length)}}
			f.hlen = uint8(c.putReadHeader(f.hdr[:], req))
			c.send(f)
			return 0
		}
	}
	if s.piper != nil && c.raw != nil && req.Length > inlineMax {
		if fds, release, ok := s.piper.PipeRead(int64(req.Offset), int64(req.Length)); ok {
			f := outFrame{file: fileRegion{pipes: fds, n: int(req.Length)}, release: release}
			f.hlen = uint8(c.putReadHeader(f.hdr[:], req))
			c.send(f)
			return 0
		}
	}
	if s.lender != nil && s.caps.Parallel && req.Length > inlineMax {
		return c.readLent(req)
	}
	buf := s.pool.get(c.readHdr + int(req.Length))
	if !s.caps.Parallel {
		s.serial.Lock()
	}
	n, err := s.src.ReadAt(buf.b[c.readHdr:], int64(req.Offset))
	if !s.caps.Parallel {
		s.serial.Unlock()
	}
	if n == int(req.Length) {
		err = nil // io.ReaderAt allows io.EOF with a full read at the end
	} else if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		s.pool.put(buf)
		code := ErrorCode(err)
		c.sendError(code, req, true, req.Offset+uint64(max(0, min(n, int(req.Length)-1))))
		return code
	}
	c.putReadHeader(buf.b, req)
	c.send(outFrame{buf: buf})
	return 0
}

// readLent serves a READ from the bytes the source lends, and returns the
// NBD error it replied with.
func (c *conn) readLent(req *RequestHeader) uint32 {
	bufs, release, err := c.s.lender.Lend(int64(req.Offset), int64(req.Length))
	if err != nil {
		code := ErrorCode(err)
		c.sendError(code, req, true, req.Offset)
		return code
	}
	f := outFrame{lent: bufs, release: release}
	f.hlen = uint8(c.putReadHeader(f.hdr[:], req))
	c.send(f)
	return 0
}

// putReadHeader encodes the header of a successful READ reply into
// b[:c.readHdr] and returns c.readHdr: a simple reply, or the header of
// the one NBD_REPLY_TYPE_OFFSET_DATA chunk that carries all the data (so
// NBD_CMD_FLAG_DF is always honoured).
func (c *conn) putReadHeader(b []byte, req *RequestHeader) int {
	if c.structured {
		return c.chunks.putDataChunkHeader(b, req, req.Offset, int(req.Length), true)
	}
	PutReply(b, 0, req.Cookie)
	return ReplySize
}
