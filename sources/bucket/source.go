package bucket

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/sources"
)

// Defaults of Options.
const (
	DefaultCacheSize = 256 << 20
	DefaultParallel  = 4
	DefaultDeadline  = 30 * time.Second
	DefaultLeaseTTL  = 30 * time.Second
)

// writebackDelay is how long a dirty chunk waits for more writes before it
// is uploaded unasked (a Flush, or a cache short of clean chunks, uploads
// it at once).
const writebackDelay = time.Second

// Options configures Open.
type Options struct {
	// ReadOnly opens the disk without a lease; every modifying call
	// returns sources.ErrReadOnly.
	ReadOnly bool
	// CacheSize bounds the chunks held in memory, dirty ones included
	// (0: DefaultCacheSize); at least four chunks are held whatever it
	// says. A chunk written while it is being uploaded takes a new buffer,
	// the upload keeping the old one: Parallel more at most.
	CacheSize int64
	// Parallel is how many uploads run at once (0: DefaultParallel).
	Parallel int
	// Deadline bounds how long a request waits for the store: a read
	// whose chunk cannot be fetched, a write that finds no room in the
	// cache, a Flush during which nothing could be stored, fail with EIO
	// after it (0: DefaultDeadline).
	Deadline time.Duration
	// LeaseTTL is how long a lease lasts unrenewed (0: DefaultLeaseTTL);
	// it is renewed every third of it.
	LeaseTTL time.Duration
	// LeaseStore is the store the lease is taken, renewed and released
	// through (nil: the disk's store). One with connections of its own
	// keeps renewals from waiting behind uploads that fill the disk's:
	// a renewal held back past three quarters of the TTL holds every
	// write and cancels the uploads in flight.
	LeaseStore Store
	// Holder is written into the lease (zero: ThisHost()).
	Holder Holder
	// TakeOver may allow taking an unexpired lease whose holder is known
	// to be gone (a dead process on this host); nil allows none.
	TakeOver func(Holder) bool
	// Logf receives the lines worth a device's log (a lost lease, uploads
	// that keep failing); nil discards them.
	Logf func(format string, args ...any)
}

// Source is a disk in a bucket, opened by Open.
type Source struct {
	store  Store
	prefix string
	size   int64
	osize  int64
	ro     bool
	opts   Options
	lease  *lease // nil when read-only
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	queue  chan *entry
	spares chan []byte // chunk buffers given up by writes during uploads, for reuse

	mu     sync.Mutex
	cond   *sync.Cond
	cache  cache
	stored storedSet // the chunks with an object (nil: unknown)
	epoch  uint64    // Flush's generation
	// failingSince is when the store began failing uploads (or the lease
	// lapsed), zero while they succeed.
	failingSince time.Time
	failed       error // sticky: the lease lost, or the Source closed
	uploads      int   // chunks being stored now
	// upDur is the recent time one chunk's upload takes (a moving
	// average), zero before the first: with budget (flushBudget), it sets
	// dirtyLimit.
	upDur  time.Duration
	budget time.Duration
	closed bool
	// leaseCtx is cancelled when the lease lapses, ending the uploads in
	// flight; a renewal that saves the lease makes a new one.
	leaseCtx    context.Context
	leaseCancel context.CancelFunc
	lapse       *time.Timer
}

// Open opens the disk under prefix in store. A read-write Open takes the
// disk's lease first (a *HeldError when another writer holds it).
func Open(ctx context.Context, store Store, prefix string, opts Options) (*Source, error) {
	opts = opts.withDefaults()
	buf := make([]byte, manifestMax)
	n, _, err := store.Get(ctx, prefix+"manifest", buf)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("no disk here: %s is missing (make one with nbdloop create)", prefix+"manifest")
	}
	if errors.Is(err, ErrTooLarge) {
		return nil, fmt.Errorf("%smanifest is larger than %d bytes: not an nbdloop disk", prefix, manifestMax)
	}
	if err != nil {
		return nil, err
	}
	m, err := decodeManifest(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("%s%v", prefix, err)
	}
	s := &Source{store: store, prefix: prefix, size: m.Size, osize: m.ObjectSize, ro: opts.ReadOnly, opts: opts}
	if !s.ro {
		ls := opts.LeaseStore
		if ls == nil {
			ls = store
		}
		if s.lease, err = takeLease(ctx, ls, prefix+"lease", opts.Holder, opts.LeaseTTL, opts.TakeOver); err != nil {
			return nil, err
		}
		if s.stored, err = listStored(ctx, store, prefix, (s.size+s.osize-1)/s.osize); err != nil {
			s.lease.release(ctx)
			return nil, err
		}
	}
	s.start()
	return s, nil
}

func (o Options) withDefaults() Options {
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.Deadline <= 0 {
		o.Deadline = DefaultDeadline
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Holder == (Holder{}) {
		o.Holder = ThisHost()
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// start makes the cache and starts the uploaders, the lease's renewer and
// the write-back ticker.
func (s *Source) start() {
	s.cond = sync.NewCond(&s.mu)
	s.budget = flushBudget
	slots := int(max(4, min(s.opts.CacheSize/s.osize, 1<<20)))
	s.cache = newCache(slots)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.tick()
	if s.ro {
		return
	}
	s.queue = make(chan *entry, slots)
	s.spares = make(chan []byte, s.opts.Parallel)
	for range s.opts.Parallel {
		s.wg.Add(1)
		go s.upload()
	}
	s.leaseCtx, s.leaseCancel = context.WithCancel(s.ctx)
	s.armLapse()
	s.wg.Add(1)
	go s.renew()
}

// Size implements sources.Source.
func (s *Source) Size() int64 { return s.size }

// ObjectSize is the disk's chunk size.
func (s *Source) ObjectSize() int64 { return s.osize }

// Caps implements sources.Source.
func (s *Source) Caps() sources.Caps {
	return sources.Caps{ReadOnly: s.ro, Flush: !s.ro, Trim: !s.ro, Zero: !s.ro, Parallel: true}
}

// SetDevice names the device the disk is served as in its lease, for the
// refusal another writer gets, renewing the lease at once.
func (s *Source) SetDevice(dev string) {
	if s.lease == nil {
		return
	}
	s.lease.setDevice(dev)
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.LeaseTTL/3)
	defer cancel()
	if s.lease.renew(ctx) == nil {
		s.armLapse()
	} // else the renewer finds out too, and acts
}

// ReadAt implements sources.Source.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if err := sources.CheckRange(off, int64(len(p)), s.size); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		idx, o := (off+int64(done))/s.osize, (off+int64(done))%s.osize
		n := int(min(int64(len(p)-done), s.chunkLen(idx)-o))
		if err := s.readChunk(p[done:done+n], idx, o); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// WriteAt implements sources.Source.
func (s *Source) WriteAt(p []byte, off int64) (int, error) {
	if s.ro {
		return 0, sources.ErrReadOnly
	}
	if err := sources.CheckRange(off, int64(len(p)), s.size); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		idx, o := (off+int64(done))/s.osize, (off+int64(done))%s.osize
		n := int(min(int64(len(p)-done), s.chunkLen(idx)-o))
		if err := s.writeChunk(p[done:done+n], idx, o); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// Trim implements sources.Source: whole chunks are deleted, parts of
// chunks zeroed.
func (s *Source) Trim(off, length int64) error { return s.Zero(off, length, true) }

// Zero implements sources.Source. A whole chunk's object is deleted
// whatever mayTrim says: a chunk that is not stored reads as zeros, and
// an object store has no allocation to keep.
func (s *Source) Zero(off, length int64, mayTrim bool) error {
	if s.ro {
		return sources.ErrReadOnly
	}
	if err := sources.CheckRange(off, length, s.size); err != nil {
		return err
	}
	for length > 0 {
		idx, o := off/s.osize, off%s.osize
		n := min(length, s.chunkLen(idx)-o)
		if err := s.zeroChunk(idx, o, n); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// chunkLen is the length of chunk idx: the object size, or less for the
// last chunk.
func (s *Source) chunkLen(idx int64) int64 { return min(s.osize, s.size-idx*s.osize) }

// key is chunk idx's object key.
func (s *Source) key(idx int64) string { return fmt.Sprintf("%schunks/%016x", s.prefix, idx) }

// eio wraps err as the EIO the kernel gets.
func eio(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return err
	}
	return fmt.Errorf("%w: %w", err, syscall.EIO)
}
