package bucket

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// entry is a chunk in the cache. Its fields are guarded by Source.mu,
// except buf and zero while loading is set, which only the loader touches.
type entry struct {
	idx       int64  // the chunk; -1: the slot is free
	buf       []byte // the chunk's bytes unless zero; allocated on first use
	zero      bool   // the chunk is all zeros (buf unused)
	loading   bool   // being fetched: wait for it
	uploading bool   // being stored
	pinned    bool   // an upload reads buf: a change needs another (writable)
	queued    bool   // in the uploaders' queue
	ref       bool   // used since the clock hand last passed
	gen       uint64 // bumped by every change
	stored    uint64 // the gen the store holds
	since     uint64 // the Flush epoch of the oldest change not stored
	dirtyAt   time.Time
}

func (e *entry) dirty() bool { return e.gen != e.stored }

// cache is a fixed set of chunk slots, evicted by a clock hand; dirty,
// loading, queued and uploading slots are never evicted.
type cache struct {
	slots []entry
	index map[int64]*entry
	hand  int
	dirty int
}

func newCache(n int) cache {
	c := cache{slots: make([]entry, n), index: make(map[int64]*entry, n)}
	for i := range c.slots {
		c.slots[i].idx = -1
	}
	return c
}

// victim returns a slot that may be reused, or nil when every slot is
// busy or dirty.
func (c *cache) victim() *entry {
	for range 2 * len(c.slots) {
		e := &c.slots[c.hand]
		c.hand = (c.hand + 1) % len(c.slots)
		switch {
		case e.idx < 0:
			return e
		case e.loading || e.uploading || e.queued || e.dirty():
		case e.ref:
			e.ref = false
		default:
			return e
		}
	}
	return nil
}

// acquire returns chunk idx's entry, ready, fetching it first when load is
// set (otherwise a chunk not in the cache comes back as zeros, for a
// caller that overwrites it whole and touches it). Called with s.mu held;
// it may release it while waiting or fetching.
func (s *Source) acquire(idx int64, load bool, deadline time.Time) (*entry, error) {
	for {
		if s.failed != nil {
			return nil, eio(s.failed)
		}
		if e := s.cache.index[idx]; e != nil {
			if !e.loading {
				e.ref = true
				return e, nil
			}
		} else if e := s.cache.victim(); e != nil {
			if e.idx >= 0 {
				delete(s.cache.index, e.idx)
			}
			*e = entry{idx: idx, buf: e.buf, zero: true, ref: true}
			s.cache.index[idx] = e
			if !load || !s.stored.has(idx) {
				return e, nil
			}
			return e, s.fetch(e, deadline)
		} else {
			s.kick(true)
		}
		if time.Now().After(deadline) && s.stalled() {
			return nil, eio(fmt.Errorf("no room in the cache for chunk %d: every chunk is waiting to be stored, and the store has failed for %v", idx, time.Since(s.failingSince).Round(time.Second)))
		}
		s.cond.Wait()
	}
}

// fetch loads e's chunk from the store, with s.mu released meanwhile; on
// failure e's slot is freed.
func (s *Source) fetch(e *entry, deadline time.Time) error {
	e.loading = true
	if e.buf == nil {
		e.buf = make([]byte, s.osize)
	}
	idx := e.idx
	s.mu.Unlock()
	err := s.load(e, idx, deadline)
	s.mu.Lock()
	e.loading = false
	s.cond.Broadcast()
	if err != nil {
		delete(s.cache.index, idx)
		e.idx = -1
	}
	return err
}

// load reads chunk idx into e, retrying until deadline: a missing object
// is zeros, an object of another length an error.
func (s *Source) load(e *entry, idx int64, deadline time.Time) error {
	n := int(s.chunkLen(idx))
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		got, _, err := s.store.Get(ctx, s.key(idx), e.buf[:n])
		cancel()
		switch {
		case err == nil && got == n:
			e.zero = false
			return nil
		case err == nil:
			return eio(fmt.Errorf("chunk object %s has %d bytes, want %d (it was not written by nbdloop)", s.key(idx), got, n))
		case errors.Is(err, ErrNotFound):
			e.zero = true
			return nil
		case errors.Is(err, ErrTooLarge):
			return eio(fmt.Errorf("chunk object %s: %w (it was not written by nbdloop)", s.key(idx), err))
		}
		if !s.backoff(attempt, deadline) {
			return eio(fmt.Errorf("reading chunk %d: %w", idx, err))
		}
	}
}

// backoff sleeps before retry attempt+1, and reports false instead when
// deadline would pass first or the Source is stopping.
func (s *Source) backoff(attempt int, deadline time.Time) bool {
	d := min(100*time.Millisecond<<min(attempt, 5), 2*time.Second)
	if time.Now().Add(d).After(deadline) {
		return false
	}
	select {
	case <-s.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// readChunk copies chunk idx's bytes at o into p.
func (s *Source) readChunk(p []byte, idx, o int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.acquire(idx, true, time.Now().Add(s.opts.Deadline))
	if err != nil {
		return err
	}
	if e.zero {
		clear(p)
	} else {
		copy(p, e.buf[o:])
	}
	return nil
}

// writeChunk copies p into chunk idx at o.
func (s *Source) writeChunk(p []byte, idx, o int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	clen := s.chunkLen(idx)
	whole := o == 0 && int64(len(p)) == clen
	deadline := time.Now().Add(s.opts.Deadline)
	if err := s.throttle(idx, deadline); err != nil {
		return err
	}
	e, err := s.acquire(idx, !whole, deadline)
	if err != nil {
		return err
	}
	s.writable(e, !whole && !e.zero)
	if e.zero {
		if e.buf == nil {
			e.buf = make([]byte, s.osize)
		}
		if !whole {
			clear(e.buf[:clen])
		}
		e.zero = false
	}
	copy(e.buf[o:], p)
	s.touch(e)
	return nil
}

// zeroChunk zeroes n bytes of chunk idx at o: the whole chunk becomes
// a zero chunk, whose object is deleted.
func (s *Source) zeroChunk(idx, o, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	whole := n == s.chunkLen(idx)
	if whole && s.cache.index[idx] == nil && !s.stored.has(idx) && s.failed == nil {
		return nil // no object, nothing cached: zeros already
	}
	deadline := time.Now().Add(s.opts.Deadline)
	if err := s.throttle(idx, deadline); err != nil {
		return err
	}
	e, err := s.acquire(idx, !whole, deadline)
	if err != nil {
		return err
	}
	switch {
	case whole:
		e.zero = true
	case e.zero:
		return nil
	default:
		s.writable(e, true)
		clear(e.buf[o : o+n])
	}
	s.touch(e)
	return nil
}

// touch records a change of e, which makes it dirty.
func (s *Source) touch(e *entry) {
	if !e.dirty() {
		s.cache.dirty++
		e.since = s.epoch
		e.dirtyAt = time.Now()
	}
	e.gen++
	if s.cache.dirty > len(s.cache.slots)/2 {
		s.kick(true)
	}
}
