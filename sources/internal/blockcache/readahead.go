package blockcache

// readahead is called when chunk idx of seg is served. If the chunk before
// it was read too, reads are sequential: keep the decoders ahead busy.
// c.mu is held.
func (c *Cache) readahead(seg int, idx int64) {
	if c.ahead < 0 {
		return
	}
	prev := ckey{seg, idx - 1}
	if idx == 0 {
		if seg == 0 {
			return
		}
		prev = ckey{seg - 1, (c.segs.Segment(seg-1).Size - 1) / c.chunk}
	}
	if e := c.chunks[prev]; e == nil || !e.read {
		return
	}
	// Within a large segment: keep its decoder a few chunks ahead.
	s := c.segs.Segment(seg)
	if !s.Spill && s.Size > c.chunk*2 {
		ahead := min(s.Size, (idx+1+int64(c.ahead)*2)*c.chunk)
		if j := c.jobs[seg]; j != nil {
			j.want = max(j.want, ahead)
		} else if cur := c.parked[seg]; cur != nil && cur.pos < ahead && c.chunks[ckey{seg, cur.pos / c.chunk}] == nil {
			if c.admit(seg, ahead) {
				c.start(seg, ahead, false)
			}
		}
	}
	if c.openRun != nil {
		c.readaheadRuns(seg)
		return
	}
	// The next segments, in parallel, within half the budget.
	var sum int64
	for k := seg + 1; k < c.segs.Len() && k <= seg+c.ahead; k++ {
		t := c.segs.Segment(k)
		if t.Spill {
			break
		}
		sum += t.Size + t.Mem
		if sum > c.budget/2 {
			break
		}
		if c.jobs[k] != nil || c.chunks[ckey{k, 0}] != nil {
			continue
		}
		if !c.admit(k, 0) {
			break
		}
		c.start(k, 0, true)
	}
}
