package blockcache

import (
	"errors"
	"fmt"
	"io"
	"syscall"
)

// start starts a decode job for seg that will reach at least rel. It takes
// over the parked decoder if that is not past rel. c.mu is held.
func (c *Cache) start(seg int, rel int64, prefetch bool) *job {
	j := &job{seg: seg, want: rel, full: prefetch || c.segs.Segment(seg).Size <= min(fullDecodeMax, c.budget/4)}
	if cur := c.parked[seg]; cur != nil {
		delete(c.parked, seg)
		c.plru.Remove(cur.elem)
		if cur.pos <= rel {
			j.cur, j.pos = cur, cur.pos
			c.stats.Resumes++
		} else {
			c.used -= cur.mem
			go cur.close()
		}
	}
	if j.cur == nil {
		c.stats.Decodes++
		c.used += c.segs.Segment(seg).Mem // the decoder's memory, from now on
		c.peak()
	}
	if prefetch {
		c.stats.Prefetch++
	}
	c.jobs[seg] = j
	go c.run(j)
	return j
}

// run decodes for job j until its readers are served (or to the segment's
// end), publishing each chunk as soon as it is decoded.
func (c *Cache) run(j *job) {
	s := c.segs.Segment(j.seg)
	opened, err := c.openJob(j, s)
	c.mu.Lock()
	if opened {
		c.recharge(j.cur)
	}
	if err == nil {
		err = c.decodeChunks(j, s)
	}
	if err != nil {
		c.fail(j, s, err)
	}
	c.retire(j, s, err == nil)
	c.mu.Unlock()
}

// openJob opens a decoder for j unless it resumes a parked one, and
// reports whether it opened one. c.mu is not held.
func (c *Cache) openJob(j *job, s Segment) (opened bool, err error) {
	if j.cur != nil {
		return false, nil
	}
	r, err := c.openSafe(j.seg)
	if err != nil {
		return false, err
	}
	j.cur = &cursor{seg: j.seg, r: r, mem: s.Mem}
	return true, nil
}

// decodeChunks decodes chunk after chunk of j's segment until the cache
// closes, the segment ends, or (unless j.full) j.want is reached,
// publishing each chunk and waking its readers. c.mu is held, and released
// while the decoder runs.
func (c *Cache) decodeChunks(j *job, s Segment) error {
	for !c.closed && j.pos < s.Size && (j.full || j.pos < j.want) {
		n := min(c.chunk, s.Size-j.pos)
		buf := c.reserveChunk(n)
		c.mu.Unlock()
		_, err := readFull(j.cur.r, buf)
		zero := err == nil && isZero(buf)
		c.mu.Lock()
		c.used -= n // the reservation
		if err != nil || zero {
			c.keepSpare(buf)
		}
		if err != nil {
			return err
		}
		if zero {
			buf = nil
		}
		c.insert(ckey{j.seg, j.pos / c.chunk}, buf, n)
		j.pos += n
		j.cur.pos = j.pos
		c.cond.Broadcast()
	}
	return nil
}

// reserveChunk reserves room for a chunk of n bytes and returns the buffer
// to decode it into: the buffer of a chunk the reservation evicted, or the
// spare, or a new one. c.mu is held.
func (c *Cache) reserveChunk(n int64) []byte {
	c.keep = n == c.chunk
	c.reserve(n)
	c.keep = false
	buf := c.spare
	c.spare = nil
	if buf == nil {
		return make([]byte, n)
	}
	return buf[:n]
}

// keepSpare keeps buf, which no entry holds, as the spare unless there is
// one. c.mu is held.
func (c *Cache) keepSpare(buf []byte) {
	if c.spare == nil && int64(cap(buf)) == c.chunk {
		c.spare = buf
	}
}

// fail records j's error (and, unless the cache closed or failures are
// transient, fails the segment's later reads) and drops every chunk the decode published: they may be
// corrupt. c.mu is held.
func (c *Cache) fail(j *job, s Segment, err error) {
	if !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("decoding bytes %d..%d: %w", s.Off, s.Off+s.Size, err)
	}
	j.err = err
	if !errors.Is(err, ErrClosed) && !c.transient {
		c.failed[j.seg] = err
	}
	for idx := int64(0); idx*c.chunk < s.Size; idx++ {
		if e := c.chunks[ckey{j.seg, idx}]; e != nil {
			c.remove(e)
		}
	}
}

// retire ends job j: its decoder is parked if the decode went well and
// stopped short of the segment's end, closed otherwise, and the readers
// waiting on the job are woken. c.mu is held.
func (c *Cache) retire(j *job, s Segment, ok bool) {
	if j.cur != nil {
		if ok && !c.closed && j.pos < s.Size {
			c.park(j.cur)
		} else {
			c.used -= j.cur.mem
			go j.cur.close()
		}
	} else {
		c.used -= s.Mem
	}
	j.done = true
	delete(c.jobs, j.seg)
	c.cond.Broadcast()
}

// openSafe opens segment i's decoder, turning a panic in a decoder of
// hostile input into an error.
func (c *Cache) openSafe(i int) (r io.Reader, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("decoder panicked: %v: %w", v, syscall.EIO)
		}
	}()
	r, err = c.open(i)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// readFull is io.ReadFull that turns a decoder panic into an error and an
// early end into io.ErrUnexpectedEOF.
func readFull(r io.Reader, buf []byte) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("decoder panicked: %v: %w", v, syscall.EIO)
		}
	}()
	// Not io.ReadFull: it drops an error that comes with the last bytes,
	// which is where decoders report a bad checksum.
	stalls := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF && n == len(buf) {
			return n, nil
		}
		if err == io.EOF {
			return n, io.ErrUnexpectedEOF
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			if stalls++; stalls > 100 {
				return n, io.ErrNoProgress
			}
		}
	}
	return n, nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
