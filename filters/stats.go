package filters

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

var statsDef = &Def{
	Name:    "stats",
	Summary: "count requests, bytes, errors, latencies and request sizes",
	Doc: "Keeps, per kind of request: the count, the errors, the bytes, latency percentiles " +
		"and a histogram of request sizes, as the kernel sent them (wherever the filter is " +
		"in the chain), and counts of requests per 256th of the device, which nbdloop top " +
		"draws as a map of recent I/O. The server writes them to /run/nbdloop/nbdN.stats.json every " +
		"interval and when it exits; read them with nbdloop stats /dev/nbdN while attached, " +
		"or get the final ones with nbdloop detach --stats. Latency runs from the arrival of " +
		"a request until its reply is queued; percentiles are at most 1/8 above the truth. " +
		"Example: --filter stats",
	Options: []Option{
		{Key: "interval", Value: "MS", Default: "1s", kind: durationKind,
			Help: "how often the statistics file is written (0: only at exit)"},
	},
	open: func(next sources.Source, a args, env Env) (sources.Source, error) {
		return NewStats(next, a.duration("interval"), env), nil
	},
}

// Latency histogram: 8 buckets per power of two of nanoseconds, so a
// percentile read from it is off by at most 1/8.
const (
	latSubBits = 3
	latSub     = 1 << latSubBits
	latBuckets = 64 * latSub
	// Request sizes: one bucket per power of two up to 2^63, the last
	// holding every larger one (lengths are 64 bits with extended
	// headers).
	sizeBuckets = 64
	// HeatCells is how many equal ranges of offsets the heat map of
	// StatsSnapshot counts requests in: a 16 x 16 square along a Hilbert
	// curve for nbdloop top, small enough for the stats file to stay small.
	HeatCells = 256
)

type opCounters struct {
	count, errors, bytes atomic.Uint64
	latSum, latMax       atomic.Uint64 // nanoseconds
	lat                  [latBuckets]atomic.Uint64
	sizes                [sizeBuckets]atomic.Uint64
}

// Stats counts what the NBD server serves, per kind of request: requests,
// errors, bytes, latency (a log-linear histogram with 8 buckets per power
// of two, plus the sum and the maximum) and request sizes (a histogram by
// power of two). Observe costs a handful of atomic additions and no lock;
// Snapshot reads the counters without stopping the server, so a snapshot
// taken under load may be a few requests inconsistent between fields.
//
// Stats is an Observer: it sees the requests as the server received them,
// wherever it is in the chain, and otherwise passes every call to next.
// The attach layer writes Snapshot to the stats file every Interval.
//
// Caps are next's, unchanged.
type Stats struct {
	next     sources.Source
	caps     sources.Caps
	clock    Clock
	started  time.Time
	interval time.Duration
	ops      [request.OpZero + 1]opCounters
	// heat counts requests per range of heatBytes offsets: reads, writes,
	// and trims and zeroes together.
	heatBytes uint64
	heat      [3][HeatCells]atomic.Uint64
}

// NewStats wraps next; interval is how often the server should write the
// statistics out (Interval). Closing the filter closes next.
func NewStats(next sources.Source, interval time.Duration, env Env) *Stats {
	c := next.Caps()
	clock := env.clock()
	size := uint64(max(next.Size(), 1))
	return &Stats{
		next: next,
		caps: sources.Caps{
			ReadOnly: c.ReadOnly, Flush: c.Flush, Trim: c.Trim, Zero: c.Zero,
			Parallel: c.Parallel, Rotational: c.Rotational, InMemory: c.InMemory,
		},
		clock:     clock,
		started:   clock.Now(),
		interval:  interval,
		heatBytes: (size-1)/HeatCells + 1,
	}
}

// Interval is how often the statistics should be written out; 0 means only
// at exit.
func (s *Stats) Interval() time.Duration { return s.interval }

// latBucket returns the histogram bucket of a latency of ns nanoseconds.
func latBucket(ns uint64) int {
	if ns < latSub {
		return int(ns)
	}
	exp := bits.Len64(ns) - 1 // ns in [2^exp, 2^(exp+1))
	sub := int(ns>>(exp-latSubBits)) & (latSub - 1)
	return (exp-latSubBits+1)*latSub + sub
}

// latBucketMax returns the largest latency in bucket i, in nanoseconds.
func latBucketMax(i int) uint64 {
	if i < latSub {
		return uint64(i)
	}
	exp := i/latSub + latSubBits - 1
	sub := uint64(i % latSub)
	lo := uint64(1)<<exp + sub<<(exp-latSubBits)
	return lo + uint64(1)<<(exp-latSubBits) - 1
}

// sizeBucket returns the histogram bucket of a request of n bytes: i such
// that n <= 2^i (bucket 0 holds 0- and 1-byte requests), or the last
// bucket for the larger ones.
func sizeBucket(n uint64) int {
	if n <= 1 {
		return 0
	}
	return min(bits.Len64(n-1), sizeBuckets-1)
}

// Observe counts r.
func (s *Stats) Observe(r request.Request) {
	if r.Op > request.OpZero {
		return
	}
	c := &s.ops[r.Op]
	c.count.Add(1)
	if r.Error != 0 {
		c.errors.Add(1)
	} else if r.Op == request.OpRead || r.Op == request.OpWrite {
		c.bytes.Add(r.Length)
	}
	ns := uint64(max(r.Latency, 0))
	c.latSum.Add(ns)
	for {
		old := c.latMax.Load()
		if ns <= old || c.latMax.CompareAndSwap(old, ns) {
			break
		}
	}
	c.lat[latBucket(ns)].Add(1)
	if r.Op != request.OpFlush {
		c.sizes[sizeBucket(r.Length)].Add(1)
		s.observeHeat(r)
	}
}

// observeHeat counts r in every heat cell its range touches (at most
// HeatCells additions, for a trim of the whole device).
func (s *Stats) observeHeat(r request.Request) {
	k := 0
	switch r.Op {
	case request.OpRead:
	case request.OpWrite:
		k = 1
	case request.OpTrim, request.OpZero:
		k = 2
	default:
		return
	}
	first := r.Offset / s.heatBytes
	if first >= HeatCells {
		return
	}
	last := first
	if r.Length > 0 {
		end := r.Offset + r.Length - 1
		if end < r.Offset { // a 64-bit length past the end of any export
			end = math.MaxUint64
		}
		last = min(end/s.heatBytes, HeatCells-1)
	}
	for i := first; i <= last; i++ {
		s.heat[k][i].Add(1)
	}
}

// StatsSnapshot is what the stats file holds: the statistics of one device
// at one time. The attach layer fills in Device, BackendID and PID.
type StatsSnapshot struct {
	Device    string    `json:"device,omitempty"`
	BackendID string    `json:"backend_id,omitempty"`
	PID       int       `json:"pid,omitempty"`
	Time      time.Time `json:"time"`
	Started   time.Time `json:"started"`
	Ops       []OpStats `json:"ops"`
	// BusyUS is the sum of the latencies of all requests so far, in
	// microseconds: its growth over an interval divided by the interval is
	// the mean number of requests in flight then (Little's law).
	BusyUS float64 `json:"busy_us"`
	// Heat counts requests by offset; nil from servers older than it.
	Heat *OffsetHeat `json:"heat,omitempty"`
}

// OffsetHeat counts requests by where they fell on the device: the device
// is cut into HeatCells ranges of CellBytes bytes (the last one may be
// shorter), and each count is of the requests that touched a range
// (a request over several ranges counts in each). Counts only grow: the
// difference between two snapshots is the I/O in between.
type OffsetHeat struct {
	CellBytes uint64   `json:"cell_bytes"`
	Read      []uint64 `json:"read"`
	Write     []uint64 `json:"write"`
	Trim      []uint64 `json:"trim_zero"`
}

// OpStats are the statistics of one kind of request. Bytes counts the
// data of successful reads and writes only (trims and zeroes carry none).
type OpStats struct {
	Op      string       `json:"op"`
	Count   uint64       `json:"count"`
	Errors  uint64       `json:"errors"`
	Bytes   uint64       `json:"bytes"`
	Latency LatencyStats `json:"latency_us"`
	Sizes   []SizeCount  `json:"sizes,omitempty"`
}

// LatencyStats are latencies in microseconds; percentiles are the upper
// bounds of histogram buckets (at most 1/8 above the truth), never above
// Max.
type LatencyStats struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99.9"`
	Max  float64 `json:"max"`
}

// SizeCount is one bucket of the request size histogram: Count requests
// of more than half of MaxBytes and at most MaxBytes bytes.
type SizeCount struct {
	MaxBytes uint64 `json:"max_bytes"`
	Count    uint64 `json:"count"`
}

// Snapshot returns the statistics so far, one OpStats per kind of request
// in the order read, write, flush, trim, zero, the total latency and the
// heat map of offsets.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{Time: s.clock.Now().UTC(), Started: s.started.UTC()}
	var busy uint64
	for _, op := range request.Ops() {
		busy += s.ops[op].latSum.Load()
		c := &s.ops[op]
		o := OpStats{Op: op.String(), Count: c.count.Load(), Errors: c.errors.Load(), Bytes: c.bytes.Load()}
		var hist [latBuckets]uint64
		var total uint64
		for i := range hist {
			hist[i] = c.lat[i].Load()
			total += hist[i]
		}
		maxNs := c.latMax.Load()
		if total > 0 {
			us := func(ns uint64) float64 { return math.Round(float64(ns)/10) / 100 }
			pct := func(q float64) float64 {
				rank := uint64(math.Ceil(q * float64(total)))
				var seen uint64
				for i, n := range hist {
					seen += n
					if seen >= rank && n > 0 {
						return us(min(latBucketMax(i), maxNs))
					}
				}
				return us(maxNs)
			}
			o.Latency = LatencyStats{
				Mean: us(c.latSum.Load() / total),
				P50:  pct(0.50), P90: pct(0.90), P99: pct(0.99), P999: pct(0.999),
				Max: us(maxNs),
			}
		}
		for i := range c.sizes {
			if n := c.sizes[i].Load(); n > 0 {
				o.Sizes = append(o.Sizes, SizeCount{MaxBytes: uint64(1) << i, Count: n})
			}
		}
		snap.Ops = append(snap.Ops, o)
	}
	snap.BusyUS = math.Round(float64(busy)/10) / 100
	h := &OffsetHeat{CellBytes: s.heatBytes}
	for k, dst := range []*[]uint64{&h.Read, &h.Write, &h.Trim} {
		*dst = make([]uint64, HeatCells)
		for i := range *dst {
			(*dst)[i] = s.heat[k][i].Load()
		}
	}
	snap.Heat = h
	return snap
}

// Size returns next's size.
func (s *Stats) Size() int64 { return s.next.Size() }

// Caps returns next's capabilities.
func (s *Stats) Caps() sources.Caps { return s.caps }

// ReadAt reads from next.
func (s *Stats) ReadAt(p []byte, off int64) (int, error) { return s.next.ReadAt(p, off) }

// WriteAt writes to next.
func (s *Stats) WriteAt(p []byte, off int64) (int, error) { return s.next.WriteAt(p, off) }

// Flush flushes next.
func (s *Stats) Flush() error { return s.next.Flush() }

// Trim trims next.
func (s *Stats) Trim(off, length int64) error { return s.next.Trim(off, length) }

// Zero zeros next.
func (s *Stats) Zero(off, length int64, mayTrim bool) error { return s.next.Zero(off, length, mayTrim) }

// Close closes next.
func (s *Stats) Close() error { return closeChain(s, s.next) }

func (s *Stats) release() error { return nil }

// Extents passes next's extents on: the filter does not change what the
// bytes are.
func (s *Stats) Extents(off, length int64, fn func(sources.Extent) bool) error {
	return sources.Extents(s.next, off, length, fn)
}
