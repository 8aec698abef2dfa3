package remote

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/nbd"
)

// call runs fn on the current connection and, while it fails because the
// connection is lost, on the next one, within the retry window.
func (s *Source) call(fn func(c *nbd.Client) error) error {
	for {
		c, err := s.conn()
		if err != nil {
			return err
		}
		err = fn(c)
		if err == nil || !lostConn(err) {
			return err
		}
		s.lost(c, err)
	}
}

// conn returns the current connection, waiting for a lost one to be back
// until the retry window since it was lost has passed.
func (s *Source) conn() (*nbd.Client, error) {
	s.mu.Lock()
	for {
		switch {
		case s.closed:
			s.mu.Unlock()
			return nil, ErrClosed
		case s.client != nil:
			c := s.client
			s.mu.Unlock()
			return c, nil
		}
		wait := time.Until(s.downSince.Add(s.opts.RetryWindow))
		if wait <= 0 {
			first := !s.windowOver
			s.windowOver = true
			s.mu.Unlock()
			if first {
				s.opts.Logf("%s: no connection for %v: requests fail with EIO until the server is back", s.name, s.opts.RetryWindow)
			}
			return nil, fmt.Errorf("nbdremote: %s: no connection to the server for %v: %w", s.name, s.opts.RetryWindow, syscall.EIO)
		}
		up := s.up
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-up:
		case <-t.C:
		}
		t.Stop()
		s.mu.Lock()
	}
}

// lost records that c's connection is gone, unless another request
// already did, and starts reconnecting.
func (s *Source) lost(c *nbd.Client, cause error) {
	s.mu.Lock()
	if s.client != c || s.closed {
		s.mu.Unlock()
		return
	}
	s.client = nil
	s.downSince = time.Now()
	s.windowOver = false
	s.up = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.loopDone.Add(1)
	s.mu.Unlock()
	s.opts.Logf("%s: connection lost (%v); reconnecting", s.name, cause)
	c.Close()
	go s.reconnect(ctx)
}

// reconnect dials until a connection to the same export is made or ctx
// is cancelled (Close), waiting MinBackoff after the first failure,
// doubling up to MaxBackoff.
func (s *Source) reconnect(ctx context.Context) {
	defer s.loopDone.Done()
	backoff := s.opts.MinBackoff
	lastErr := ""
	for attempt := 1; ; attempt++ {
		c, err := s.dial(ctx)
		if err == nil {
			if err = s.same(c.Info()); err != nil {
				c.Close()
			}
		}
		if err == nil {
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				c.Close()
				return
			}
			down := time.Since(s.downSince).Round(time.Millisecond)
			// Said before the waiting requests go on, so that the log
			// has it by the time the first of them returns.
			s.opts.Logf("%s: reconnected after %v (%d attempts)", s.name, down, attempt)
			s.client = c
			close(s.up)
			s.up = nil
			s.mu.Unlock()
			return
		}
		if ctx.Err() != nil {
			return
		}
		if msg := err.Error(); msg != lastErr {
			s.opts.Logf("%s: reconnecting: %v (retrying every %v at most)", s.name, err, s.opts.MaxBackoff)
			lastErr = msg
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, s.opts.MaxBackoff)
	}
}

// errChanged wraps the reasons a new connection is not taken.
var errChanged = errors.New("the export changed")

// same refuses a new connection to an export that is not the one the
// Source serves: another size, or read-only where it was writable.
func (s *Source) same(info nbd.ExportInfo) error {
	switch {
	case info.Size != s.info.Size:
		return fmt.Errorf("%w: it now has %d bytes, not %d", errChanged, info.Size, s.info.Size)
	case !s.caps.ReadOnly && info.Flags&nbd.FlagReadOnly != 0:
		return fmt.Errorf("%w: it is now read-only", errChanged)
	case info.MaxPayload < s.info.MaxPayload:
		return fmt.Errorf("%w: its maximum payload is now %d bytes, not %d", errChanged, info.MaxPayload, s.info.MaxPayload)
	case info.MinBlock > s.info.MinBlock:
		return fmt.Errorf("%w: its minimum block size is now %d bytes, not %d", errChanged, info.MinBlock, s.info.MinBlock)
	}
	return nil
}
