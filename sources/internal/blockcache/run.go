package blockcache

import (
	"fmt"
	"io"
	"syscall"
)

// RunOpener opens a decoder that yields segments first..first+n-1 back to
// back, from the first one's start, as an Opener does one segment. It is
// called from many goroutines at once.
type RunOpener func(first, n int) (io.Reader, error)

const (
	// DefaultRunMax is the default bound of a run (Options.RunMax).
	DefaultRunMax = 8 << 20
)

// readaheadRuns keeps the segments ahead of a sequential reader at seg
// fetched by runs: from the first segment after seg that is neither
// cached nor being decoded, runs as long as what is ahead of seg already
// (at least Readahead chunks, at most RunMax: the window grows as a
// sequential reader goes on), as far as Readahead RunMax (within half the
// budget) ahead of seg; a run starts when there is room for the whole
// window. The search starts where the last run ended when that is ahead
// of seg, and passes at most twice Readahead segments already there, so
// that reads over cached data cost little. c.mu is held.
func (c *Cache) readaheadRuns(seg int) {
	ahead := int64(max(c.ahead, 1))
	horizon := min(c.budget/2, ahead*c.runMax)
	k, have := seg+1, int64(0)
	if k >= c.segs.Len() {
		return
	}
	if f := c.runFront; f > k && f < c.segs.Len() {
		if have = c.segs.Segment(f).Off - c.segs.Segment(k).Off; have >= horizon {
			return
		}
		k = f
	}
	for skips := int64(0); k < c.segs.Len() && have < horizon; {
		s := c.segs.Segment(k)
		if s.Spill {
			return
		}
		if c.jobs[k] != nil || c.chunks[ckey{k, 0}] != nil {
			if skips++; skips > 2*ahead {
				return
			}
			have += s.Size
			k++
			continue
		}
		window := min(max(c.chunk*ahead, have), c.runMax, horizon)
		if have+window > horizon {
			return // a run as long as the window when there is room for it
		}
		n, size := 0, int64(0)
		for k+n < c.segs.Len() && size < window {
			t := c.segs.Segment(k + n)
			if t.Spill || c.jobs[k+n] != nil || c.chunks[ckey{k + n, 0}] != nil {
				break
			}
			size += t.Size
			n++
		}
		if !c.admit(k, 0) {
			return
		}
		c.startRun(k, n)
		c.runFront = k + n
		have += size
		k += n
	}
}

// startRun starts a job that decodes segments first..first+n-1 with one
// decoder of c.openRun, each chunk published as it comes. c.mu is held.
func (c *Cache) startRun(first, n int) {
	j := &job{seg: first, end: first + n, full: true}
	for k := first; k < j.end; k++ {
		c.jobs[k] = j
	}
	c.stats.Decodes++
	c.stats.Prefetch++
	c.stats.Runs++
	c.used += c.segs.Segment(first).Mem
	c.peak()
	go c.runSegments(j)
}

// runSegments decodes run j segment after segment. A segment is released
// to other jobs as soon as it is done; a failure drops the chunks of the
// segment it broke (those before it are whole) and ends the run, whose
// later segments go back to being fetched on demand. c.mu is not held.
func (c *Cache) runSegments(j *job) {
	r, err := c.openRunSafe(j.seg, j.end-j.seg)
	c.mu.Lock()
	defer c.mu.Unlock()
	mem := c.segs.Segment(j.seg).Mem
	if err == nil {
		j.cur = &cursor{seg: j.seg, r: r}
	}
	for err == nil && j.seg < j.end && !c.closed {
		s := c.segs.Segment(j.seg)
		if err = c.decodeChunks(j, s); err == nil && j.pos == s.Size {
			delete(c.jobs, j.seg)
			j.seg++
			j.pos = 0
			c.cond.Broadcast()
		}
	}
	if err != nil {
		c.fail(j, c.segs.Segment(j.seg), err)
	}
	for k := j.seg; k < j.end; k++ {
		delete(c.jobs, k)
	}
	if j.cur != nil {
		go j.cur.close()
	}
	c.used -= mem
	j.done = true
	c.cond.Broadcast()
}

// openRunSafe is openSafe for a run.
func (c *Cache) openRunSafe(first, n int) (r io.Reader, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("decoder panicked: %v: %w", v, syscall.EIO)
		}
	}()
	return c.openRun(first, n)
}
