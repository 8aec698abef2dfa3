package bucket

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Holder names the holder of a disk's lease, for the error that refuses a
// second writer.
type Holder struct {
	Host   string `json:"host"`
	PID    int    `json:"pid"`
	Device string `json:"device,omitempty"`
}

func (h Holder) String() string {
	s := fmt.Sprintf("pid %d on %.64q", h.PID, h.Host)
	if h.Device != "" {
		s += fmt.Sprintf(" (%.64q)", h.Device)
	}
	return s
}

// leaseRecord is the lease object's content.
type leaseRecord struct {
	Holder
	Token   string `json:"token"`   // random, one per Open
	Expires int64  `json:"expires"` // Unix milliseconds
}

// leaseMax is the most bytes read of a lease object.
const leaseMax = 4096

// HeldError is the refusal of a read-write Open while another writer holds
// the disk's lease.
type HeldError struct {
	Holder  Holder
	Expires time.Time
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("disk is in use by %s, its lease renewed until %s", e.Holder, e.Expires.UTC().Format("2006-01-02 15:04:05 UTC"))
}

// errLeaseLost is the sticky failure of a Source whose lease another
// writer took.
var errLeaseLost = errors.New("lease lost: another writer took the disk")

// lease is a held lease. Its fields are guarded by mu; validUntil is the
// local time until which writes may be sent: three quarters of the TTL
// after the last renewal was sent, so that they land before a taker may
// judge the lease expired.
type lease struct {
	store Store
	key   string
	ttl   time.Duration

	mu         sync.Mutex
	rec        leaseRecord
	etag       string
	validUntil time.Time
}

// takeLease writes the lease object key for h, if it does not exist, or
// exists but expired, or takeOver says its holder is gone; otherwise it
// returns a *HeldError.
func takeLease(ctx context.Context, store Store, key string, h Holder, ttl time.Duration, takeOver func(Holder) bool) (*lease, error) {
	var tok [16]byte
	rand.Read(tok[:])
	l := &lease{store: store, key: key, ttl: ttl, rec: leaseRecord{Holder: h, Token: hex.EncodeToString(tok[:])}}
	buf := make([]byte, leaseMax)
	for range 4 {
		err := l.write(ctx, Cond{IfNoneMatch: true})
		if !errors.Is(err, ErrPrecondition) {
			return l, err
		}
		n, etag, err := store.Get(ctx, key, buf)
		if errors.Is(err, ErrNotFound) {
			continue // released between the two requests
		}
		if err != nil {
			return nil, fmt.Errorf("reading the lease: %w", err)
		}
		var old leaseRecord
		if err := json.Unmarshal(buf[:n], &old); err != nil {
			return nil, fmt.Errorf("lease object %s is not valid: %v (delete it if no one writes the disk)", key, err)
		}
		if old.Token == l.rec.Token { // our own write, whose answer was lost
			l.setETag(etag)
			return l, nil
		}
		expires := time.UnixMilli(old.Expires)
		if time.Now().Before(expires) && (takeOver == nil || !takeOver(old.Holder)) {
			return nil, &HeldError{Holder: old.Holder, Expires: expires}
		}
		err = l.write(ctx, Cond{IfMatch: etag})
		if !errors.Is(err, ErrPrecondition) {
			return l, err
		}
	}
	return nil, fmt.Errorf("taking the lease %s: other writers keep changing it (try again)", key)
}

// write stores the record with a new expiry under cond, and on success
// moves validUntil.
func (l *lease) write(ctx context.Context, cond Cond) error {
	l.mu.Lock()
	sent := time.Now()
	l.rec.Expires = sent.Add(l.ttl).UnixMilli()
	b, _ := json.Marshal(l.rec)
	l.mu.Unlock()
	etag, err := l.store.Put(ctx, l.key, b, cond)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.etag, l.validUntil = etag, sent.Add(l.ttl*3/4)
	l.mu.Unlock()
	return nil
}

func (l *lease) setETag(etag string) {
	l.mu.Lock()
	l.etag, l.validUntil = etag, time.Now().Add(l.ttl/2)
	l.mu.Unlock()
}

// renew extends the lease. It returns errLeaseLost when the lease object
// is no longer the one this lease wrote, and the store's error when the
// renewal could not be made.
func (l *lease) renew(ctx context.Context) error {
	l.mu.Lock()
	etag := l.etag
	l.mu.Unlock()
	err := l.write(ctx, Cond{IfMatch: etag})
	if !errors.Is(err, ErrPrecondition) && !errors.Is(err, ErrNotFound) {
		return err
	}
	// Another holder, or our own renewal whose answer was lost.
	buf := make([]byte, leaseMax)
	n, cur, gerr := l.store.Get(ctx, l.key, buf)
	var rec leaseRecord
	if gerr == nil && json.Unmarshal(buf[:n], &rec) == nil && rec.Token == l.rec.Token && rec.Expires != 0 {
		l.setETag(cur)
		return nil
	}
	if gerr != nil && !errors.Is(gerr, ErrNotFound) {
		return gerr
	}
	return errLeaseLost
}

// valid reports whether writes may be sent now, and until when.
func (l *lease) valid() (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Before(l.validUntil), l.validUntil
}

// setDevice names the device in the lease from the next renewal on.
func (l *lease) setDevice(dev string) {
	l.mu.Lock()
	l.rec.Device = dev
	l.mu.Unlock()
}

// release marks the lease expired, if it is still this one's.
func (l *lease) release(ctx context.Context) error {
	l.mu.Lock()
	etag := l.etag
	l.rec.Expires = 0
	b, _ := json.Marshal(l.rec)
	l.mu.Unlock()
	_, err := l.store.Put(ctx, l.key, b, Cond{IfMatch: etag})
	return err
}

// ThisHost is the Holder of this process: the host name and pid.
func ThisHost() Holder {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return Holder{Host: host, PID: os.Getpid()}
}
