package bucket

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// errClosed fails the calls made after Close.
var errClosed = errors.New("disk is closed")

// kick queues the dirty chunks for upload: all of them, or those dirty
// for writebackDelay. Called with s.mu held; the queue has room for every
// slot, so it never blocks.
func (s *Source) kick(all bool) {
	if s.queue == nil || s.cache.dirty == 0 {
		return
	}
	now := time.Now()
	for i := range s.cache.slots {
		e := &s.cache.slots[i]
		if e.idx >= 0 && e.dirty() && !e.queued && !e.uploading && (all || now.Sub(e.dirtyAt) >= writebackDelay) {
			e.queued = true
			s.queue <- e
		}
	}
}

// upload is an uploader: it stores a copy of each chunk queued, or
// deletes its object when the chunk is all zeros.
func (s *Source) upload() {
	defer s.wg.Done()
	snap := make([]byte, s.osize)
	for {
		var e *entry
		select {
		case <-s.ctx.Done():
			return
		case e = <-s.queue:
		}
		s.mu.Lock()
		e.queued = false
		if e.idx < 0 || !e.dirty() || s.failed != nil {
			s.mu.Unlock()
			continue
		}
		e.uploading = true
		idx, gen, zero, epoch := e.idx, e.gen, e.zero, s.epoch
		data := snap[:s.chunkLen(idx)]
		if !zero {
			copy(data, e.buf)
		}
		s.mu.Unlock()
		ok := s.store1(idx, data, zero || allZero(data))
		s.mu.Lock()
		e.uploading = false
		if ok {
			s.progress = time.Now()
			e.stored = gen
			if e.dirty() {
				e.since = epoch // changed while it was stored
			} else {
				s.cache.dirty--
			}
		}
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// store1 stores chunk idx (deletes its object when zero), retrying until
// it succeeds, and returns false when the Source stops first. While the
// lease is not valid, nothing is sent.
func (s *Source) store1(idx int64, data []byte, zero bool) bool {
	key := s.key(idx)
	for attempt := 0; ; attempt++ {
		if s.ctx.Err() != nil || s.stopped() {
			return false
		}
		ok, until := s.lease.valid()
		if !ok {
			s.pause(100 * time.Millisecond)
			continue
		}
		if d := time.Now().Add(s.opts.Deadline); d.Before(until) {
			until = d
		}
		ctx, cancel := context.WithDeadline(s.ctx, until)
		var err error
		if zero {
			err = s.store.Delete(ctx, key)
		} else {
			_, err = s.store.Put(ctx, key, data, Cond{})
		}
		cancel()
		if err == nil {
			return true
		}
		if attempt%10 == 0 {
			s.opts.Logf("storing chunk %d: %v (retrying)", idx, err)
		}
		s.pause(min(100*time.Millisecond<<min(attempt, 5), 2*time.Second))
	}
}

// pause sleeps for d, or until the Source stops.
func (s *Source) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
	case <-t.C:
	}
}

func (s *Source) stopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed != nil
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// tick queues chunks dirty for writebackDelay and wakes the waiters, so
// that they see their deadlines, four times a second.
func (s *Source) tick() {
	defer s.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		s.kick(false)
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// renew renews the lease every third of its TTL (every second while it
// fails), and fails the Source when another writer has taken it.
func (s *Source) renew() {
	defer s.wg.Done()
	every := s.opts.LeaseTTL / 3
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, every)
		err := s.lease.renew(ctx)
		cancel()
		switch {
		case err == nil:
			t.Reset(every)
		case errors.Is(err, errLeaseLost):
			s.opts.Logf("%s: %v: failing every request with EIO", s.prefix+"lease", err)
			s.fail(errLeaseLost)
			return
		default:
			if ok, _ := s.lease.valid(); !ok {
				s.opts.Logf("renewing the lease: %v: writes are held until it is renewed", err)
			}
			t.Reset(min(time.Second, every))
		}
	}
}

// fail makes err the answer to every request from now on.
func (s *Source) fail(err error) {
	s.mu.Lock()
	if s.failed == nil {
		s.failed = err
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Flush implements sources.Source: it returns once every chunk changed
// before the call is stored, or fails with EIO when the store took
// nothing for Options.Deadline (the chunks stay dirty, retried).
func (s *Source) Flush() error {
	if s.ro {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	epoch := s.epoch
	s.epoch++
	start := time.Now()
	for {
		if s.failed != nil {
			return eio(s.failed)
		}
		if !s.pending(epoch) {
			return nil
		}
		s.kick(true)
		if since := time.Since(s.progress); since > s.opts.Deadline && time.Since(start) > s.opts.Deadline {
			return eio(fmt.Errorf("flush: the store took no chunk for %v (it keeps being retried)", since.Round(time.Second)))
		}
		s.cond.Wait()
	}
}

// pending reports whether a chunk changed at or before epoch is not stored.
func (s *Source) pending(epoch uint64) bool {
	if s.cache.dirty == 0 {
		return false
	}
	for i := range s.cache.slots {
		if e := &s.cache.slots[i]; e.idx >= 0 && e.dirty() && e.since <= epoch {
			return true
		}
	}
	return false
}

// Close implements sources.Source: it flushes, stops, and releases the
// lease.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.Flush()
	s.mu.Lock()
	lost := s.failed != nil
	s.mu.Unlock()
	s.fail(errClosed)
	s.cancel()
	s.wg.Wait()
	if s.lease != nil && !lost {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Deadline)
		defer cancel()
		if rerr := s.lease.release(ctx); rerr != nil && err == nil {
			err = fmt.Errorf("releasing the lease: %w", rerr)
		}
	}
	return err
}
