package filters

import (
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

var delayDef = &Def{
	Name:    "delay",
	Summary: "delay requests, as a slow or distant disk does",
	Doc: "Waits before passing each request on: a fixed delay per kind of request plus an " +
		"optional random jitter, for testing timeouts and what a slow disk does to a file " +
		"system. Each request waits in its own server worker, so delays overlap up to the " +
		"number of workers (16 per connection). " +
		"Example, 100 ms reads while /tmp/slow exists: --filter delay:read=100,file=/tmp/slow",
	Options: []Option{
		{Key: "read", Value: "MS", Default: "0", kind: durationKind, Help: "delay of each read"},
		{Key: "write", Value: "MS", Default: "0", kind: durationKind, Help: "delay of each write"},
		{Key: "flush", Value: "MS", Default: "0", kind: durationKind, Help: "delay of each flush"},
		{Key: "trim", Value: "MS", Default: "0", kind: durationKind, Help: "delay of each trim"},
		{Key: "zero", Value: "MS", Default: "0", kind: durationKind, Help: "delay of each write-zeroes"},
		{Key: "all", Value: "MS", kind: durationKind,
			Help: "delay of every kind of request not given its own"},
		{Key: "jitter", Value: "MS", Default: "0", kind: durationKind,
			Help: "add a random delay, uniform in 0..MS, to the kinds of request given a delay (read=0 gives reads jitter only)"},
		{Key: "after", Value: "MS", Default: "0", kind: durationKind,
			Help: "start delaying only MS after attach (a disk that turns slow)"},
		{Key: "file", Value: "PATH", kind: pathKind,
			Help: "delay only while PATH exists (watched with inotify, and checked every second)"},
		{Key: "seed", Value: "N", kind: countKind,
			Help: "seed of the jitter, for reproducible runs (default: random)"},
	},
	open: func(next sources.Source, a args, env Env) (sources.Source, error) {
		opts := DelayOptions{
			Jitter: a.duration("jitter"),
			After:  a.duration("after"),
			File:   a.str("file"),
		}
		for _, op := range request.Ops() {
			switch {
			case a.has(op.String()):
				opts.Delays[op] = a.duration(op.String())
				opts.Delayed |= 1 << op
			case a.has("all"):
				opts.Delays[op] = a.duration("all")
				opts.Delayed |= 1 << op
			}
		}
		if a.has("seed") {
			s := a.uint64("seed")
			opts.Seed = &s
		}
		return NewDelay(next, opts, env), nil
	},
}

// DelayOptions configure a Delay filter; see the delay entry of Help.
type DelayOptions struct {
	// Delays holds the fixed delay of each kind of request, by Op.
	Delays [request.OpZero + 1]time.Duration
	// Delayed are the kinds of request that wait; NewDelay adds every
	// kind with a non-zero delay. Jitter applies to these.
	Delayed OpSet
	Jitter  time.Duration // extra delay, uniform in [0, Jitter]
	After   time.Duration // no delays until this long after NewDelay
	File    string        // delay only while this file exists
	Seed    *uint64       // seed of the jitter; nil: random
}

// Delay makes requests wait before it passes them on: a fixed delay per
// kind of request, plus a uniformly random jitter, optionally only after a
// time (a disk that turns slow) or while a trigger file exists. Sleeping
// goes through Env.Clock, so tests run on a fake clock.
//
// Caps are next's, unchanged. A request of a kind that is not delayed costs
// one comparison.
//
// Limits: each request sleeps in the server worker serving it, so at most
// as many requests wait at once as there are workers (16 per connection);
// more queue behind them, which adds to their latency as a slow disk's
// queue does. Timer precision is the kernel's, about 50 µs to 1 ms.
type Delay struct {
	next  sources.Source
	caps  sources.Caps
	opts  DelayOptions
	clock Clock
	start time.Time
	trig  *trigger
	mu    sync.Mutex // guards rng
	rng   *mrand.Rand
}

// NewDelay wraps next. Closing the filter closes next.
func NewDelay(next sources.Source, opts DelayOptions, env Env) *Delay {
	for _, op := range request.Ops() {
		if opts.Delays[op] > 0 {
			opts.Delayed |= 1 << op
		}
	}
	var seed uint64
	if opts.Seed != nil {
		seed = *opts.Seed
	} else {
		var b [8]byte
		rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	c := next.Caps()
	clock := env.clock()
	return &Delay{
		next: next,
		caps: sources.Caps{
			ReadOnly: c.ReadOnly, Flush: c.Flush, Trim: c.Trim, Zero: c.Zero,
			Parallel: c.Parallel, Rotational: c.Rotational,
		},
		opts:  opts,
		clock: clock,
		start: clock.Now(),
		trig:  newTrigger(opts.File),
		rng:   mrand.New(mrand.NewPCG(seed, 0x64656c6179)),
	}
}

// wait sleeps for op's delay, if it is due.
func (d *Delay) wait(op request.Op) {
	if !d.opts.Delayed.Has(op) || !d.trig.active() {
		return
	}
	if d.opts.After > 0 && d.clock.Now().Sub(d.start) < d.opts.After {
		return
	}
	dur := d.opts.Delays[op]
	if d.opts.Jitter > 0 {
		d.mu.Lock()
		dur += time.Duration(d.rng.Int64N(int64(d.opts.Jitter) + 1))
		d.mu.Unlock()
	}
	if dur > 0 {
		d.clock.Sleep(dur)
	}
}

// Size returns next's size.
func (d *Delay) Size() int64 { return d.next.Size() }

// Caps returns next's capabilities.
func (d *Delay) Caps() sources.Caps { return d.caps }

// ReadAt waits for the read delay, then reads from next.
func (d *Delay) ReadAt(p []byte, off int64) (int, error) {
	d.wait(request.OpRead)
	return d.next.ReadAt(p, off)
}

// WriteAt waits for the write delay, then writes to next.
func (d *Delay) WriteAt(p []byte, off int64) (int, error) {
	d.wait(request.OpWrite)
	return d.next.WriteAt(p, off)
}

// Flush waits for the flush delay, then flushes next.
func (d *Delay) Flush() error {
	d.wait(request.OpFlush)
	return d.next.Flush()
}

// Trim waits for the trim delay, then trims next.
func (d *Delay) Trim(off, length int64) error {
	d.wait(request.OpTrim)
	return d.next.Trim(off, length)
}

// Zero waits for the zero delay, then zeros next.
func (d *Delay) Zero(off, length int64, mayTrim bool) error {
	d.wait(request.OpZero)
	return d.next.Zero(off, length, mayTrim)
}

// Close stops watching the trigger file and closes next.
func (d *Delay) Close() error { return closeChain(d, d.next) }

func (d *Delay) release() error {
	d.trig.close()
	return nil
}

// Extents passes next's extents on without a delay: block status is not
// one of the kinds of request the filter delays.
func (d *Delay) Extents(off, length int64, fn func(sources.Extent) bool) error {
	return sources.Extents(d.next, off, length, fn)
}
