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

// upload is an uploader: it stores each chunk queued, or deletes its
// object when the chunk is all zeros. It reads the chunk's buffer without
// s.mu: while it is uploading, writers give the chunk a new buffer
// (writable) rather than change this one.
func (s *Source) upload() {
	defer s.wg.Done()
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
		s.uploads++
		idx, gen, zero, epoch := e.idx, e.gen, e.zero, s.epoch
		var data []byte
		if !zero {
			data, e.pinned = e.buf[:s.chunkLen(idx)], true
		}
		s.mu.Unlock()
		zero = zero || allZero(data)
		start := time.Now()
		ok := s.store1(idx, data, zero)
		s.mu.Lock()
		e.uploading, e.pinned = false, false
		s.uploads--
		if ok && !zero {
			s.upDur = avgDur(s.upDur, time.Since(start))
		}
		if data != nil && (len(e.buf) == 0 || &e.buf[0] != &data[0]) {
			s.spare(data[:cap(data)]) // the chunk has a new buffer
		}
		if ok {
			s.failingSince = time.Time{}
			s.stored.set(idx, !zero)
			e.stored = gen
			if e.dirty() {
				e.since = epoch // changed while it was stored
			} else {
				s.cache.dirty--
				e.zero = zero // zeros found: served as such from now on
			}
		}
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// flushBudget is how long a Flush may take with as many dirty chunks as
// dirtyLimit allows: well within the kernel's patience with a request
// (30 s, after which it drops the connection).
const flushBudget = 10 * time.Second

// dirtyLimit is how many chunks may be dirty at once: as many as the
// uploaders store in s.budget (flushBudget) at their recent pace, at least two per
// uploader (and that many before the first upload tells the pace), at
// most the cache. Called with s.mu held.
func (s *Source) dirtyLimit() int {
	n := 2 * s.opts.Parallel
	if s.upDur > 0 {
		n = max(n, int(s.budget/s.upDur)*s.opts.Parallel)
	}
	return min(n, len(s.cache.slots))
}

// avgDur folds d into the moving average avg (zero: none yet).
func avgDur(avg, d time.Duration) time.Duration {
	if avg == 0 {
		return d
	}
	return (3*avg + d) / 4
}

// throttle waits, before a change of chunk idx that would make one more
// chunk dirty, until fewer than dirtyLimit are, so that a Flush returns
// in time; it fails with EIO as acquire does when the store has failed
// for Options.Deadline. Called with s.mu held; it may release it while
// waiting.
func (s *Source) throttle(idx int64, deadline time.Time) error {
	for {
		if s.failed != nil {
			return eio(s.failed)
		}
		if e := s.cache.index[idx]; e != nil && e.dirty() || s.cache.dirty < s.dirtyLimit() {
			return nil
		}
		// Chunks are queued once dirty for writebackDelay; when no upload
		// is under way, at once.
		s.kick(len(s.queue)+s.uploads == 0)
		if time.Now().After(deadline) && s.stalled() {
			return eio(fmt.Errorf("no room for a change of chunk %d: %d chunks are waiting to be stored, and the store has failed for %v", idx, s.cache.dirty, time.Since(s.failingSince).Round(time.Second)))
		}
		s.cond.Wait()
	}
}

// writable makes e's buffer safe to change: while an upload reads it, a
// new buffer, with the same bytes when keep is set (a change of part of
// the chunk). Called with s.mu held, before any change of e.buf.
func (s *Source) writable(e *entry, keep bool) {
	if !e.pinned {
		return
	}
	var b []byte
	select {
	case b = <-s.spares:
	default:
		b = make([]byte, s.osize)
	}
	if keep {
		copy(b, e.buf)
	}
	e.buf, e.pinned = b, false
}

// spare keeps b, a chunk buffer nothing uses any more, for writable.
func (s *Source) spare(b []byte) {
	select {
	case s.spares <- b:
	default:
	}
}

// uploadTimeout bounds one attempt to store a chunk, against a server
// that stopped answering; a slow upload that the server is taking is not
// cut short before it.
const uploadTimeout = 2 * time.Minute

// store1 stores chunk idx (deletes its object when zero), retrying until
// it succeeds, and returns false when the Source stops first. Nothing is
// sent while the lease is not valid, and what is in flight when it lapses
// is cancelled.
func (s *Source) store1(idx int64, data []byte, zero bool) bool {
	key := s.key(idx)
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		failed, lctx, has := s.failed, s.leaseCtx, s.stored.has(idx)
		s.mu.Unlock()
		if failed != nil || s.ctx.Err() != nil {
			return false
		}
		if zero && !has {
			return true
		}
		if ok, _ := s.lease.valid(); !ok || lctx.Err() != nil {
			s.failing()
			s.pause(100 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(lctx, uploadTimeout)
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
		s.failing()
		if attempt%10 == 0 {
			s.opts.Logf("storing chunk %d: %v (retrying)", idx, err)
		}
		s.pause(min(100*time.Millisecond<<min(attempt, 5), 2*time.Second))
	}
}

// failing records that the store failed an upload, or the lease lapsed.
func (s *Source) failing() {
	s.mu.Lock()
	if s.failingSince.IsZero() {
		s.failingSince = time.Now()
	}
	s.mu.Unlock()
}

// stalled reports whether the store has failed for Options.Deadline.
// Called with s.mu held.
func (s *Source) stalled() bool {
	return s.failed != nil || !s.failingSince.IsZero() && time.Since(s.failingSince) > s.opts.Deadline
}

// armLapse sets the lease's lapse timer for its current validity.
func (s *Source) armLapse() {
	_, until := s.lease.valid()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leaseCtx.Err() != nil {
		s.leaseCtx, s.leaseCancel = context.WithCancel(s.ctx)
	}
	if s.lapse != nil {
		s.lapse.Stop()
	}
	s.lapse = time.AfterFunc(time.Until(until), func() {
		if ok, _ := s.lease.valid(); !ok {
			s.mu.Lock()
			s.leaseCancel()
			s.mu.Unlock()
			s.failing()
		}
	})
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
		// A renewal may take up to the TTL on a busy store: the lease
		// lapses meanwhile (uploads wait) but is saved if it lands.
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.LeaseTTL)
		err := s.lease.renew(ctx)
		cancel()
		switch {
		case err == nil:
			s.armLapse()
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
		if s.stalled() && time.Since(start) > s.opts.Deadline {
			return eio(fmt.Errorf("flush: the store has failed for %v (the chunks are kept and retried)", time.Since(s.failingSince).Round(time.Second)))
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
	s.mu.Lock()
	if s.lapse != nil {
		s.lapse.Stop()
	}
	s.mu.Unlock()
	if s.lease != nil && !lost {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Deadline)
		defer cancel()
		if rerr := s.lease.release(ctx); rerr != nil && err == nil {
			err = fmt.Errorf("releasing the lease: %w", rerr)
		}
	}
	return err
}
