package filters

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

var errorDef = &Def{
	Name:    "error",
	Summary: "fail requests with an error, as a failing disk does",
	Doc: "Fails requests with the error given, so that what sits above (md, a file system, " +
		"an application) can be tested against a failing disk; this is how the RAID 5 of " +
		"the nbdkit paper fails its drives on demand. By default every request fails; file, " +
		"ops, range, after and rate narrow it down, in that order. Injected errors are " +
		"logged to the server's log (/run/nbdloop/nbdN.log), at most 10 lines a second. " +
		"The Linux driver reports every NBD error to its callers as EIO. " +
		"Example, a disk that fails while /tmp/fail0 exists: --filter error:file=/tmp/fail0",
	Options: []Option{
		{Key: "error", Value: "ERRNO", Default: "EIO", kind: errnoKind,
			Help: "the error: EIO, ENOSPC, EPERM, ENOMEM, EINVAL, EOVERFLOW, ENOTSUP or ESHUTDOWN"},
		{Key: "rate", Value: "P", Default: "1", kind: probabilityKind,
			Help: "probability that a request which qualifies fails: 0..1 or 0%..100%"},
		{Key: "file", Value: "PATH", kind: pathKind,
			Help: "fail only while PATH exists (watched with inotify, and checked every second)"},
		{Key: "ops", Value: "OPS", Default: "all", kind: opsKind,
			Help: "the kinds of request that can fail"},
		{Key: "range", Value: "RANGE", Repeat: true, kind: rangeKind,
			Help: "fail only requests that touch these bytes (bad sectors); flushes touch none"},
		{Key: "after", Value: "N", Default: "0", kind: countKind,
			Help: "let the first N requests of these kinds and ranges through, counted from attach"},
		{Key: "seed", Value: "N", kind: countKind,
			Help: "seed of the random choices, for reproducible runs (default: random, logged at attach)"},
	},
	open: func(next sources.Source, a args, env Env) (sources.Source, error) {
		opts := ErrorOptions{
			Errno:  a.get("error").(syscall.Errno),
			Rate:   a.get("rate").(float64),
			File:   a.str("file"),
			Ops:    a.get("ops").(OpSet),
			Ranges: a.ranges("range"),
			After:  a.uint64("after"),
		}
		if a.has("seed") {
			s := a.uint64("seed")
			opts.Seed = &s
		}
		return NewError(next, opts, env), nil
	},
}

// ErrorOptions configure an Error filter; see the error entry of Help.
type ErrorOptions struct {
	Errno  syscall.Errno // EIO when 0
	Rate   float64       // probability 0..1 that a qualifying request fails
	File   string        // fail only while this file exists; "" always
	Ops    OpSet         // kinds of request that may fail; 0 means all
	Ranges []Range       // fail only requests that touch these; none: anywhere
	After  uint64        // never fail the first After qualifying requests
	Seed   *uint64       // nil: a random seed
}

// Error fails requests with an errno, for testing what sits above a failing
// disk: with a probability (Rate), only while a trigger file exists (File),
// per kind of request (Ops), only in byte ranges (Ranges) and after a number
// of requests (After). A request qualifies when its kind is in Ops, it
// touches a range (when there are ranges) and the After first ones have
// passed; it then fails if the trigger file exists (when there is one) and
// a random draw falls under Rate. Draws come from a PCG generator seeded
// with Seed, so a serial sequence of requests fails the same way every run.
//
// Injected errors wrap the errno (the NBD server sends it) and are logged
// through Env.Logf, at most 10 lines a second.
//
// Caps are next's, unchanged. A filter whose requests do not qualify costs
// a few comparisons and, with File, one atomic load per request: a
// goroutine follows the file (see trigger), not the requests.
//
// Limits: After counts requests as they reach the filter, so with parallel
// requests which ones are the first N is up to the scheduler, and so are the
// draws that each one gets.
type Error struct {
	next   sources.Source
	caps   sources.Caps
	opts   ErrorOptions
	err    error
	trig   *trigger
	count  atomic.Uint64
	mu     sync.Mutex // guards rng
	rng    *mrand.Rand
	logger rateLog
}

// NewError wraps next. Closing the filter closes next.
func NewError(next sources.Source, opts ErrorOptions, env Env) *Error {
	if opts.Errno == 0 {
		opts.Errno = syscall.EIO
	}
	if opts.Ops == 0 {
		opts.Ops = allOps
	}
	var seed uint64
	if opts.Seed != nil {
		seed = *opts.Seed
	} else {
		var b [8]byte
		rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
		if opts.Rate > 0 && opts.Rate < 1 {
			env.logf("error filter: seed=%d", seed)
		}
	}
	c := next.Caps()
	e := &Error{
		next: next,
		caps: sources.Caps{
			ReadOnly: c.ReadOnly, Flush: c.Flush, Trim: c.Trim, Zero: c.Zero,
			Parallel: c.Parallel, Rotational: c.Rotational, InMemory: c.InMemory,
		},
		opts:   opts,
		err:    fmt.Errorf("filters: error filter: injected error: %w", opts.Errno),
		trig:   newTrigger(opts.File),
		rng:    mrand.New(mrand.NewPCG(seed, 0x6572726f72)),
		logger: rateLog{env: env, clock: env.clock(), perSecond: 10},
	}
	return e
}

// inject returns the error to fail a request with, or nil.
func (e *Error) inject(op request.Op, off, n int64) error {
	if !e.opts.Ops.Has(op) {
		return nil
	}
	if len(e.opts.Ranges) > 0 && !overlaps(e.opts.Ranges, off, n) {
		return nil
	}
	if e.opts.After > 0 && e.count.Add(1) <= e.opts.After {
		return nil
	}
	if !e.trig.active() {
		return nil
	}
	if e.opts.Rate < 1 {
		e.mu.Lock()
		x := e.rng.Float64()
		e.mu.Unlock()
		if x >= e.opts.Rate {
			return nil
		}
	}
	e.logger.printf("error filter: injected %s into %s of %d bytes at offset %d", errnoName(uint32(e.opts.Errno)), op, n, off)
	return e.err
}

// Size returns next's size.
func (e *Error) Size() int64 { return e.next.Size() }

// Caps returns next's capabilities.
func (e *Error) Caps() sources.Caps { return e.caps }

// ReadAt reads from next unless the read is failed.
func (e *Error) ReadAt(p []byte, off int64) (int, error) {
	if err := e.inject(request.OpRead, off, int64(len(p))); err != nil {
		return 0, err
	}
	return e.next.ReadAt(p, off)
}

// WriteAt writes to next unless the write is failed. A read-only next
// refuses it first.
func (e *Error) WriteAt(p []byte, off int64) (int, error) {
	if e.caps.ReadOnly {
		return 0, sources.ErrReadOnly
	}
	if err := e.inject(request.OpWrite, off, int64(len(p))); err != nil {
		return 0, err
	}
	return e.next.WriteAt(p, off)
}

// Flush flushes next unless the flush is failed.
func (e *Error) Flush() error {
	if err := e.inject(request.OpFlush, 0, 0); err != nil {
		return err
	}
	return e.next.Flush()
}

// Trim trims next unless the trim is failed.
func (e *Error) Trim(off, length int64) error {
	if e.caps.ReadOnly {
		return sources.ErrReadOnly
	}
	if err := e.inject(request.OpTrim, off, length); err != nil {
		return err
	}
	return e.next.Trim(off, length)
}

// Zero zeros next unless the zero is failed.
func (e *Error) Zero(off, length int64, mayTrim bool) error {
	if e.caps.ReadOnly {
		return sources.ErrReadOnly
	}
	if err := e.inject(request.OpZero, off, length); err != nil {
		return err
	}
	return e.next.Zero(off, length, mayTrim)
}

// Close stops watching the trigger file and closes next.
func (e *Error) Close() error { return closeChain(e, e.next) }

func (e *Error) release() error {
	e.trig.close()
	return nil
}

// rateLog logs at most perSecond lines a second and counts the rest, which
// the next line that gets through reports.
type rateLog struct {
	env       Env
	clock     Clock
	perSecond int

	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

func (l *rateLog) printf(format string, args ...any) {
	if l.env.Logf == nil {
		return
	}
	l.mu.Lock()
	now := l.clock.Now()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	if l.n >= l.perSecond {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.n++
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if suppressed > 0 {
		msg += fmt.Sprintf(" (%d similar lines suppressed)", suppressed)
	}
	l.env.Logf("%s", msg)
}

// Extents passes next's extents on and is never failed: block status is
// not one of the kinds of request the filter fails, and the bytes are
// next's.
func (e *Error) Extents(off, length int64, fn func(sources.Extent) bool) error {
	return sources.Extents(e.next, off, length, fn)
}
