package nbd

import "syscall"

// outFrame is one reply waiting to be written: a header-only reply
// (hdr[:hlen]: a simple reply, or an NBD_REPLY_TYPE_NONE chunk), a reply
// that fills buf (a READ's header and data, an error or block status
// chunk), which goes back to the pool once written, or a READ reply whose
// header is hdr[:hlen] and whose data is sent from file (a file in RAM, or
// a pipe the source filled), or written from lent (the source's memory);
// release, when set, gives the file or the memory back once written.
type outFrame struct {
	hdr     [extDataChunkHeaderSize]byte
	hlen    uint8
	buf     *buffer
	file    fileRegion
	lent    [][]byte
	release func()
}

// fileRegion is n bytes of the file fd from offset off, or, when pipes is
// not nil, the n bytes those pipes hold; n is 0 for none.
type fileRegion struct {
	fd    int
	off   int64
	n     int
	pipes []int
}

func (c *conn) sendHeader(errCode uint32, cookie uint64) {
	f := outFrame{hlen: ReplySize}
	PutReply(f.hdr[:], errCode, cookie)
	c.send(f)
}

// sendDone sends the reply to a request that returns no data: a simple
// reply on success (as nbdkit and qemu-nbd do: the protocol allows it for
// every command but READ and BLOCK_STATUS, and a client such as libnbd
// reads a simple reply in one call where a chunk takes two), an
// NBD_REPLY_TYPE_NONE chunk with extended headers (which allow no simple
// replies), and with structured replies an error chunk when errCode is not
// 0.
func (c *conn) sendDone(errCode uint32, req *RequestHeader) {
	switch {
	case !c.structured || (errCode == 0 && !c.extended):
		c.sendHeader(errCode, req.Cookie)
	case errCode != 0:
		c.sendError(errCode, req, false, 0)
	default:
		var f outFrame
		f.hlen = uint8(c.chunks.putNoneChunk(f.hdr[:], req))
		c.send(f)
	}
}

// sendError sends a failed reply: a simple reply with the error, or with
// structured replies or extended headers an error chunk, with the offset
// where the request failed when withOffset, and the error's text for the
// user.
func (c *conn) sendError(errCode uint32, req *RequestHeader, withOffset bool, off uint64) {
	if !c.structured {
		c.sendHeader(errCode, req.Cookie)
		return
	}
	buf := c.s.pool.get(0)
	buf.b = c.chunks.appendErrorChunk(buf.b[:0], req, errCode, syscall.Errno(errCode).Error(), withOffset, off)
	c.send(outFrame{buf: buf})
}

// send queues one whole reply frame and writes the queue unless another
// worker is already writing it. Under load, replies that complete while a
// write is in progress go out together in one writev (fewer syscalls and
// kernel wake-ups); at queue depth 1 every reply is written at once. Frames
// never interleave.
func (c *conn) send(f outFrame) {
	c.wmu.Lock()
	c.queue = append(c.queue, f)
	if c.corked {
		c.wmu.Unlock()
		return
	}
	c.takeWriteTurn()
}

// uncork ends a batch of requests served by readLoop: replies queued
// while corked go out together now, unless a worker is writing, which then
// writes them too.
func (c *conn) uncork() {
	c.wmu.Lock()
	c.corked = false
	c.takeWriteTurn()
}

// takeWriteTurn writes the queue unless another goroutine holds the write
// turn, which will write what was queued. c.wmu is held on entry and
// released on return.
func (c *conn) takeWriteTurn() {
	if c.writing {
		c.wmu.Unlock()
		return
	}
	c.writing = true
	c.flushLocked()
	c.writing = false
	c.wmu.Unlock()
}

// flushLocked writes the queue until it stays empty. c.wmu is held on entry
// and on return, and c.writing is set by the caller.
func (c *conn) flushLocked() {
	for len(c.queue) > 0 {
		batch := c.queue
		c.queue = c.spare[:0]
		c.wmu.Unlock()
		c.writeBatch(batch)
		c.wmu.Lock()
		c.spare = batch[:0]
	}
}

// writeBatch writes frames with one writev. Only the goroutine that set
// c.writing calls it, so c.iov and c.werr need no lock.
func (c *conn) writeBatch(batch []outFrame) {
	c.iov = c.iov[:0]
	for i := range batch {
		switch f := &batch[i]; {
		case f.buf != nil:
			c.iov = append(c.iov, f.buf.b)
		case f.file.n > 0:
			c.iov = append(c.iov, f.hdr[:f.hlen])
			c.writeIovecs()
			c.sendFile(f.file)
		default:
			c.iov = append(c.iov, f.hdr[:f.hlen])
			c.iov = append(c.iov, f.lent...)
		}
	}
	c.writeIovecs()
	for i := range batch {
		f := &batch[i]
		if f.buf != nil {
			c.s.pool.put(f.buf)
			f.buf = nil
		}
		if f.release != nil {
			f.release()
			f.lent, f.release = nil, nil
		}
	}
}

// writeIovecs writes and empties c.iov. After a write error nothing more is
// written: the connection is lost.
func (c *conn) writeIovecs() {
	if len(c.iov) == 0 {
		return
	}
	if c.werr == nil {
		var err error
		if c.raw != nil {
			err = c.raw.WriteBuffers(c.iov)
		} else {
			err = c.writeHeld()
		}
		if err != nil {
			c.werr = err
			c.s.opts.Logf("nbd: writing reply: %v", err)
		}
	}
	c.iov = c.iov[:0]
}

// sendFile sends the data of a READ reply whose header is already written.
// If the file cannot supply it (it shrank under us), the reply cannot be
// turned into an error any more, so the connection is shut down: the
// kernel then fails or retries the request instead of taking short data as
// success.
func (c *conn) sendFile(r fileRegion) {
	if c.werr != nil {
		return
	}
	var err error
	if r.pipes != nil {
		err = c.raw.Splice(r.pipes, r.n)
	} else {
		err = c.raw.SendFile(r.fd, r.off, r.n)
	}
	if err != nil {
		c.werr = err
		c.s.opts.Logf("nbd: sending a READ reply from the source file: %v (closing the connection)", err)
		c.raw.Shutdown()
	}
}

// writeHeld writes c.iov with writeJoined, through a transport that
// gathers the TLS records of the whole batch when rw has one.
func (c *conn) writeHeld() error {
	if c.held == nil {
		return c.writeJoined()
	}
	c.held.Hold()
	err := c.writeJoined()
	if rerr := c.held.Release(); err == nil {
		err = rerr
	}
	return err
}

// joinMax is the most reply bytes writeJoined copies into one Write.
const joinMax = 256 << 10

// writeJoined writes c.iov to a connection without a socket of its own (a
// TLS session): replies are copied together into c.joined, up to joinMax
// bytes, and written with one Write, so that a batch of small replies
// becomes a few full TLS records and system calls, not one of each per
// reply. A reply over joinMax is written on its own, uncopied.
func (c *conn) writeJoined() error {
	for _, b := range c.iov {
		if len(c.joined)+len(b) > joinMax && len(c.joined) > 0 {
			if err := c.writeOut(c.joined); err != nil {
				return err
			}
			c.joined = c.joined[:0]
		}
		if len(b) > joinMax {
			if err := c.writeOut(b); err != nil {
				return err
			}
			continue
		}
		c.joined = append(c.joined, b...)
	}
	err := c.writeOut(c.joined)
	c.joined = c.joined[:0]
	return err
}

func (c *conn) writeOut(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, err := c.rw.Write(b)
	return err
}
