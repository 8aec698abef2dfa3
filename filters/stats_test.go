package filters

import (
	"math/rand/v2"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

func TestStatsConformance(t *testing.T) {
	t.Parallel()
	want := testData(256<<10+512, 15)
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		return NewStats(newMemoryWith(t, want), time.Second, Env{})
	}, want)
}

// TestLatencyBuckets: every latency falls in a bucket whose bounds hold
// it, buckets are in order, and a bucket is at most 1/8 wide.
func TestLatencyBuckets(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	values := []uint64{0, 1, 7, 8, 9, 15, 16, 17, 1000, 1 << 40, 1<<63 - 1, 1 << 63, 1<<64 - 1}
	for range 10000 {
		values = append(values, r.Uint64()>>r.IntN(64))
	}
	for _, v := range values {
		b := latBucket(v)
		if b < 0 || b >= latBuckets {
			t.Fatalf("latBucket(%d) = %d, out of 0..%d", v, b, latBuckets-1)
		}
		hi := latBucketMax(b)
		lo := uint64(0)
		if b > 0 {
			lo = latBucketMax(b-1) + 1
		}
		if v < lo || v > hi {
			t.Fatalf("latBucket(%d) = %d, whose range is %d..%d", v, b, lo, hi)
		}
		if hi-lo > lo/8+1 && lo >= 8 {
			t.Fatalf("bucket %d = %d..%d is wider than 1/8", b, lo, hi)
		}
	}
}

func TestStatsSnapshot(t *testing.T) {
	clock := newFakeClock()
	s := NewStats(newMemoryWith(t, make([]byte, 4096)), time.Second, Env{Clock: clock})
	defer s.Close()
	// 1000 reads of 4 KiB with latencies 1..1000 µs, 10 failed 64 KiB
	// writes of 5 ms, 3 flushes, a trim of 1 MiB.
	lat := make([]time.Duration, 1000)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Microsecond
	}
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(lat), func(i, j int) { lat[i], lat[j] = lat[j], lat[i] })
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < len(lat); i += 4 {
				s.Observe(request.Request{Op: request.OpRead, Length: 4096, Latency: lat[i]})
			}
		})
	}
	wg.Wait()
	for range 10 {
		s.Observe(request.Request{Op: request.OpWrite, Length: 65536, Latency: 5 * time.Millisecond, Error: 5})
	}
	for range 3 {
		s.Observe(request.Request{Op: request.OpFlush, Latency: 100 * time.Microsecond})
	}
	s.Observe(request.Request{Op: request.OpTrim, Length: 1 << 20, Latency: 3 * time.Microsecond})
	clock.Advance(time.Minute)
	snap := s.Snapshot()
	if got, want := snap.Time.Sub(snap.Started), time.Minute; got != want {
		t.Errorf("Time - Started = %v, want %v", got, want)
	}
	byOp := map[string]OpStats{}
	var names []string
	for _, o := range snap.Ops {
		byOp[o.Op] = o
		names = append(names, o.Op)
	}
	if want := []string{"read", "write", "flush", "trim", "zero"}; !reflect.DeepEqual(names, want) {
		t.Errorf("ops = %v, want %v", names, want)
	}
	rd := byOp["read"]
	if rd.Count != 1000 || rd.Errors != 0 || rd.Bytes != 4096000 {
		t.Errorf("read count, errors, bytes = %d, %d, %d, want 1000, 0, 4096000", rd.Count, rd.Errors, rd.Bytes)
	}
	if want := []SizeCount{{MaxBytes: 4096, Count: 1000}}; !reflect.DeepEqual(rd.Sizes, want) {
		t.Errorf("read sizes = %v, want %v", rd.Sizes, want)
	}
	// True percentiles: 500, 900, 990, 999 µs; buckets add at most 1/8.
	checks := []struct {
		name      string
		got, want float64
	}{
		{"mean", rd.Latency.Mean, 500.5}, {"p50", rd.Latency.P50, 500}, {"p90", rd.Latency.P90, 900},
		{"p99", rd.Latency.P99, 990}, {"p99.9", rd.Latency.P999, 999}, {"max", rd.Latency.Max, 1000},
	}
	for _, c := range checks {
		if c.got < c.want || c.got > c.want*1.125 {
			t.Errorf("read latency %s = %v µs, want %v..%v", c.name, c.got, c.want, c.want*1.125)
		}
	}
	if rd.Latency.Mean != 500.5 || rd.Latency.Max != 1000 {
		t.Errorf("read latency mean, max = %v, %v, want exactly 500.5, 1000", rd.Latency.Mean, rd.Latency.Max)
	}
	wr := byOp["write"]
	if wr.Count != 10 || wr.Errors != 10 || wr.Bytes != 0 || wr.Latency.P50 != 5000 || wr.Latency.Max != 5000 {
		t.Errorf("write = %+v, want 10 requests, 10 errors, no bytes, 5000 µs", wr)
	}
	if f := byOp["flush"]; f.Count != 3 || f.Sizes != nil {
		t.Errorf("flush = %+v, want 3 requests and no sizes", f)
	}
	if tr := byOp["trim"]; tr.Count != 1 || tr.Bytes != 0 || !reflect.DeepEqual(tr.Sizes, []SizeCount{{MaxBytes: 1 << 20, Count: 1}}) {
		t.Errorf("trim = %+v, want 1 request of 1 MiB, no bytes", tr)
	}
	if z := byOp["zero"]; z.Count != 0 || z.Latency != (LatencyStats{}) {
		t.Errorf("zero = %+v, want nothing", z)
	}
}

func TestSizeBuckets(t *testing.T) {
	tests := []struct {
		n    uint64
		want int
	}{{0, 0}, {1, 0}, {2, 1}, {3, 2}, {512, 9}, {513, 10}, {4096, 12}, {131072, 17}, {32 << 20, 25}, {1<<32 - 1, 32}, {1 << 32, 32}, {1<<32 + 1, 33}, {1 << 63, 63}, {1<<64 - 1, 63}}
	for _, tt := range tests {
		if got := sizeBucket(tt.n); got != tt.want {
			t.Errorf("sizeBucket(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
	var bs []int
	for _, tt := range tests {
		bs = append(bs, sizeBucket(tt.n))
	}
	if !sort.IntsAreSorted(bs) {
		t.Errorf("size buckets out of order: %v", bs)
	}
}

func TestStatsObserveAllocatesNothing(t *testing.T) {
	s := NewStats(newMemoryWith(t, make([]byte, 4096)), 0, Env{})
	defer s.Close()
	r := request.Request{Op: request.OpRead, Length: 4096, Latency: 20 * time.Microsecond}
	if n := testing.AllocsPerRun(1000, func() { s.Observe(r) }); n != 0 {
		t.Errorf("Observe allocates %v times per call, want 0", n)
	}
}

// TestStatsHeat: requests are counted in every 256th of the device they
// touch, by kind; flushes are not; the total latency is the sum.
func TestStatsHeat(t *testing.T) {
	const size = 1 << 20 // 4 KiB a cell
	s := NewStats(newMemoryWith(t, make([]byte, size)), time.Second, Env{})
	defer s.Close()
	s.Observe(request.Request{Op: request.OpWrite, Offset: 0, Length: 8192, Latency: 10 * time.Microsecond})
	s.Observe(request.Request{Op: request.OpWrite, Offset: 4095, Length: 2, Latency: 10 * time.Microsecond})
	s.Observe(request.Request{Op: request.OpRead, Offset: size - 1, Length: 1, Latency: 5 * time.Microsecond})
	s.Observe(request.Request{Op: request.OpTrim, Offset: 0, Length: size, Latency: 100 * time.Microsecond})
	s.Observe(request.Request{Op: request.OpZero, Offset: 10 * 4096, Length: 4096, Latency: 20 * time.Microsecond})
	s.Observe(request.Request{Op: request.OpFlush, Latency: 1 * time.Millisecond})
	s.Observe(request.Request{Op: request.OpRead, Offset: size, Length: 512, Latency: 0}) // past the end: not counted
	snap := s.Snapshot()
	h := snap.Heat
	if h == nil || h.CellBytes != 4096 || len(h.Read) != HeatCells || len(h.Write) != HeatCells || len(h.Trim) != HeatCells {
		t.Fatalf("heat = %+v, want %d cells of 4096 bytes", h, HeatCells)
	}
	want := func(name string, got []uint64, cells map[int]uint64, others uint64) {
		for i, n := range got {
			w, ok := cells[i]
			if !ok {
				w = others
			}
			if n != w {
				t.Errorf("%s[%d] = %d, want %d", name, i, n, w)
			}
		}
	}
	want("write", h.Write, map[int]uint64{0: 2, 1: 2}, 0)
	want("read", h.Read, map[int]uint64{HeatCells - 1: 1}, 0)
	want("trim", h.Trim, map[int]uint64{10: 2}, 1)
	if want := 10 + 10 + 5 + 100 + 20 + 1000 + 0.0; snap.BusyUS != want {
		t.Errorf("BusyUS = %v, want %v", snap.BusyUS, want)
	}
}
