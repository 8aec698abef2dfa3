package nbd

import (
	"io"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// Limits of a READ reply in content chunks (read_holes.go).
const (
	// maxReadRuns is the most content chunks one READ reply has: past
	// it, the rest of the request goes out as data.
	maxReadRuns = 32
	// minHoleRun is the shortest hole or zero range sent as an
	// NBD_REPLY_TYPE_OFFSET_HOLE chunk; shorter ones go out as data (the
	// protocol asks for chunks in multiples of 512 bytes).
	minHoleRun = 512
)

// readRun is one content chunk of a READ reply: n bytes at off, data or
// a hole.
type readRun struct {
	off, n uint64
	hole   bool
}

// holeReader splits structured READ replies into data and hole chunks
// from what the Source's Extents say. Each goroutine that serves requests
// has its own, so that splitting allocates nothing: runs is its scratch
// and add, bound once, is the callback passed to Extents.
type holeReader struct {
	runs [maxReadRuns]readRun
	n    int
	full bool // runs is full: the rest of the request is data
	add  func(sources.Extent) bool
}

func newHoleReader() *holeReader {
	h := &holeReader{}
	h.add = h.addExtent
	return h
}

// addExtent records one extent: a hole or zero extent of minHoleRun bytes
// or more starts or extends a hole run, anything else a data run.
func (h *holeReader) addExtent(e sources.Extent) bool {
	hole := e.Kind != sources.ExtentData && e.Length >= minHoleRun
	if h.n > 0 && h.runs[h.n-1].hole == hole {
		h.runs[h.n-1].n += uint64(e.Length)
		return true
	}
	if h.n == maxReadRuns {
		h.full = true
		return false
	}
	h.runs[h.n] = readRun{off: uint64(e.Off), n: uint64(e.Length), hole: hole}
	h.n++
	return true
}

// split fills h.runs with the runs of [off, off+n) and reports whether any
// is a hole. A Source that is no Extenter, or whose Extents fail, has no
// holes: the READ is then served as one data chunk.
func (h *holeReader) split(src sources.Source, off, n uint64) bool {
	if _, ok := src.(sources.Extenter); !ok {
		return false
	}
	h.n, h.full = 0, false
	if err := sources.Extents(src, int64(off), int64(n), h.add); err != nil || h.n == 0 {
		return false
	}
	last := &h.runs[h.n-1]
	if end := off + n; last.off+last.n < end {
		// Cut short by maxReadRuns: the rest is data, in the last run
		// (which becomes data if it was a hole).
		last.hole = false
		last.n = end - last.off
	}
	for _, r := range h.runs[:h.n] {
		if r.hole {
			return true
		}
	}
	return false
}

// size returns the bytes of the reply made of h's runs with chunk format f.
func (h *holeReader) size(f chunkFormat) int {
	size := 0
	for _, r := range h.runs[:h.n] {
		if r.hole {
			size += f.headerSize() + 12
		} else {
			size += f.headerSize() + 8 + int(r.n)
		}
	}
	return size
}

// readHoles serves a READ whose range has holes with one chunk per run of
// h, and reports whether it did (false: serve it as one data chunk).
// Holes are sent only where the Source says so through Extents, never
// found by reading the data; a READ with NBD_CMD_FLAG_DF, which allows
// one content chunk, is never split. It returns the NBD error it replied
// with.
func (c *conn) readHoles(req *RequestHeader, h *holeReader) (code uint32, ok bool) {
	s := c.s
	if !c.structured || h == nil || req.Flags&request.FlagDF != 0 || req.Length == 0 {
		return 0, false
	}
	if !s.caps.Parallel {
		s.serial.Lock()
	}
	buf, failed, err := c.composeHoles(req, h)
	if !s.caps.Parallel {
		s.serial.Unlock()
	}
	switch {
	case err != nil:
		code := ErrorCode(err)
		c.sendError(code, req, true, failed)
		return code, true
	case buf == nil:
		return 0, false
	}
	c.send(outFrame{buf: buf})
	return 0, true
}

// composeHoles builds the reply of data and hole chunks to req in a
// pooled buffer, or returns nil when the range has no holes. When the
// Source fails to read a data run, it returns the error and the offset
// where the READ failed.
func (c *conn) composeHoles(req *RequestHeader, h *holeReader) (buf *buffer, failed uint64, err error) {
	s := c.s
	if !h.split(s.src, req.Offset, req.Length) {
		return nil, 0, nil
	}
	f := c.chunks
	buf = s.pool.get(h.size(f))
	at := 0
	for i, r := range h.runs[:h.n] {
		done := i == h.n-1
		if r.hole {
			at += f.putHoleChunk(buf.b[at:], req, r.off, uint32(r.n), done)
			continue
		}
		hdr := f.putDataChunkHeader(buf.b[at:], req, r.off, int(r.n), done)
		data := buf.b[at+hdr : at+hdr+int(r.n)]
		got, err := s.src.ReadAt(data, int64(r.off))
		if got == len(data) {
			err = nil
		} else if err == nil {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			s.pool.put(buf)
			return nil, r.off + uint64(max(0, min(got, len(data)-1))), err
		}
		at += hdr + len(data)
	}
	return buf, 0, nil
}
