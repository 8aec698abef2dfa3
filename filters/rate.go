package filters

import (
	"errors"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

var rateDef = &Def{
	Name:    "rate",
	Summary: "limit the bandwidth, as a slow link or disk does",
	Doc: "Limits the bytes per second that reads and writes carry, in total and per " +
		"direction, like nbdkit's rate filter; trims, zeroes and flushes carry no data and " +
		"are not limited. A request waits until the bytes it carries fit under the limit; " +
		"an idle device saves up at most burst worth of bytes. The limits can change while " +
		"attached: the *-file options name a file that holds the limit (BYTES, 0 for none), " +
		"read again every second; while the file is missing or unreadable the limit given " +
		"in the spec applies. Example: --filter rate:limit=10M,file=/tmp/rate",
	Options: []Option{
		{Key: "limit", Value: "BYTES", kind: bandwidthKind,
			Help: "bytes per second of reads and writes together (default: no limit)"},
		{Key: "read", Value: "BYTES", kind: bandwidthKind,
			Help: "bytes per second of reads (default: no limit)"},
		{Key: "write", Value: "BYTES", kind: bandwidthKind,
			Help: "bytes per second of writes (default: no limit)"},
		{Key: "file", Value: "PATH", kind: pathKind, Help: "file holding the limit"},
		{Key: "read-file", Value: "PATH", kind: pathKind, Help: "file holding the read limit"},
		{Key: "write-file", Value: "PATH", kind: pathKind, Help: "file holding the write limit"},
		{Key: "burst", Value: "MS", Default: "100ms", kind: durationKind,
			Help: "how many milliseconds of bandwidth an idle device may use at once"},
	},
	check: func(a args) error {
		for _, k := range []string{"limit", "read", "write", "file", "read-file", "write-file"} {
			if a.has(k) {
				return nil
			}
		}
		return errors.New("give a limit (limit=, read= or write=, in bytes per second) or a file holding one")
	},
	open: func(next sources.Source, a args, env Env) (sources.Source, error) {
		return NewRate(next, RateOptions{
			Limit:     a.int64("limit"),
			Read:      a.int64("read"),
			Write:     a.int64("write"),
			File:      a.str("file"),
			ReadFile:  a.str("read-file"),
			WriteFile: a.str("write-file"),
			Burst:     a.duration("burst"),
		}, env), nil
	},
}

// RateOptions configure a Rate filter; see the rate entry of Help. Limits
// are bytes per second; 0 is no limit.
type RateOptions struct {
	Limit, Read, Write        int64
	File, ReadFile, WriteFile string
	Burst                     time.Duration // 100 ms when 0
}

// ratePoll is how often the limit files are read again.
const ratePoll = time.Second

// Rate limits the bandwidth of reads and writes, in total and per
// direction, each limit a bucket that a request takes its bytes from
// (generic cell rate algorithm: each request books len/limit seconds of a
// virtual clock and sleeps until its booking starts being due). An idle
// bucket saves up at most Burst worth of bytes. Limits can be read from
// files, checked again once a second on the request path; a request that
// is larger than a second's worth of bytes simply waits longer.
//
// Caps are next's, unchanged. Time comes from Env.Clock, so tests run on a
// fake clock.
//
// Limits: a request waits before it is passed on, in the worker serving
// it, so bandwidth shapes the requests' start times, not their data
// transfer; with a fast source underneath the two are the same.
type Rate struct {
	next               sources.Source
	caps               sources.Caps
	clock              Clock
	env                Env
	total, read, write bucket
}

// NewRate wraps next. Closing the filter closes next.
func NewRate(next sources.Source, opts RateOptions, env Env) *Rate {
	opts.Burst = max(opts.Burst, 0)
	c := next.Caps()
	r := &Rate{
		next: next,
		caps: sources.Caps{
			ReadOnly: c.ReadOnly, Flush: c.Flush, Trim: c.Trim, Zero: c.Zero,
			Parallel: c.Parallel, Rotational: c.Rotational,
		},
		clock: env.clock(),
		env:   env,
	}
	for _, b := range []struct {
		b     *bucket
		limit int64
		file  string
		name  string
	}{{&r.total, opts.Limit, opts.File, "limit"}, {&r.read, opts.Read, opts.ReadFile, "read limit"}, {&r.write, opts.Write, opts.WriteFile, "write limit"}} {
		b.b.name, b.b.base, b.b.file, b.b.burst, b.b.env = b.name, b.limit, b.file, opts.Burst, env
		b.b.setLimit(b.limit, time.Time{})
		if b.file != "" {
			b.b.poll(r.clock.Now())
		}
	}
	return r
}

// bucket is one limit.
type bucket struct {
	name  string
	base  int64  // the limit from the spec
	file  string // the file that may override it
	burst time.Duration
	env   Env

	mu       sync.Mutex
	limit    int64     // bytes per second; 0: none
	next     time.Time // the virtual time at which the bucket is free again
	polled   time.Time // when file was last read
	badValue string    // the unparsable contents last logged
}

func (b *bucket) setLimit(limit int64, now time.Time) {
	if limit == b.limit {
		return
	}
	b.limit = limit
	// Bookings made at the old rate do not delay requests at the new
	// one.
	if b.next.After(now) {
		b.next = now
	}
}

// poll reads the limit file again. b.mu is held, or b is not shared yet.
func (b *bucket) poll(now time.Time) {
	b.polled = now
	data, err := os.ReadFile(b.file)
	if err != nil {
		b.setLimit(b.base, now)
		return
	}
	s := strings.TrimSpace(string(data))
	n, err := parseSize(strings.TrimSuffix(s, "/s"))
	if err != nil {
		if s != b.badValue {
			b.badValue = s
			b.env.logf("rate filter: %s: %s %q %v; keeping %d bytes/s", b.file, b.name, s, err, b.limit)
		}
		return
	}
	b.badValue = ""
	b.setLimit(n, now)
}

// book reserves n bytes and returns how long the request must wait.
func (b *bucket) book(n int64, now time.Time) time.Duration {
	if b.file == "" && b.base == 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.file != "" && now.Sub(b.polled) >= ratePoll {
		b.poll(now)
	}
	if b.limit <= 0 {
		return 0
	}
	if earliest := now.Add(-b.burst); b.next.Before(earliest) {
		b.next = earliest
	}
	b.next = b.next.Add(time.Duration(float64(n) / float64(b.limit) * float64(time.Second)))
	return b.next.Sub(now)
}

// Limit returns the bytes per second currently in force for op
// (request.OpRead or request.OpWrite, through both its buckets): the smaller
// limit, 0 for none.
func (r *Rate) Limit(op request.Op) int64 {
	dir := &r.read
	if op == request.OpWrite {
		dir = &r.write
	}
	var l int64
	for _, b := range []*bucket{&r.total, dir} {
		b.mu.Lock()
		if b.limit > 0 && (l == 0 || b.limit < l) {
			l = b.limit
		}
		b.mu.Unlock()
	}
	return l
}

func (r *Rate) wait(dir *bucket, n int) {
	if n == 0 {
		return
	}
	now := r.clock.Now()
	w := max(r.total.book(int64(n), now), dir.book(int64(n), now))
	if w > 0 {
		r.clock.Sleep(w)
	}
}

// Size returns next's size.
func (r *Rate) Size() int64 { return r.next.Size() }

// Caps returns next's capabilities.
func (r *Rate) Caps() sources.Caps { return r.caps }

// ReadAt waits until len(p) bytes fit the read limits, then reads from
// next.
func (r *Rate) ReadAt(p []byte, off int64) (int, error) {
	r.wait(&r.read, len(p))
	return r.next.ReadAt(p, off)
}

// WriteAt waits until len(p) bytes fit the write limits, then writes to
// next.
func (r *Rate) WriteAt(p []byte, off int64) (int, error) {
	if r.caps.ReadOnly {
		return 0, sources.ErrReadOnly
	}
	r.wait(&r.write, len(p))
	return r.next.WriteAt(p, off)
}

// Flush flushes next, unlimited.
func (r *Rate) Flush() error { return r.next.Flush() }

// Trim trims next, unlimited.
func (r *Rate) Trim(off, length int64) error { return r.next.Trim(off, length) }

// Zero zeros next, unlimited.
func (r *Rate) Zero(off, length int64, mayTrim bool) error {
	return r.next.Zero(off, length, mayTrim)
}

// Close closes next.
func (r *Rate) Close() error { return closeChain(r, r.next) }

func (r *Rate) release() error { return nil }

// Extents passes next's extents on at once: the limits count the bytes
// read and written, and a block status query moves none.
func (r *Rate) Extents(off, length int64, fn func(sources.Extent) bool) error {
	return sources.Extents(r.next, off, length, fn)
}
