package filters

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

func TestRateConformance(t *testing.T) {
	t.Parallel()
	want := testData(256<<10+512, 3)
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		return NewRate(newMemoryWith(t, want), RateOptions{Limit: 1 << 20, Read: 512 << 10}, Env{Clock: newFakeClock()})
	}, want)
}

// TestRateThroughput moves a known number of bytes through the filter on
// a fake clock and checks the time it took against the limit: n bytes at
// L bytes/s take n/L seconds, less the burst an idle bucket starts with.
func TestRateThroughput(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		spec   string
		reads  int // 64 KiB requests
		writes int
		want   time.Duration
	}{
		{spec: "rate:limit=1M", reads: 160, want: 10*time.Second - 100*time.Millisecond},
		{spec: "rate:limit=1M,burst=0", reads: 80, writes: 80, want: 10 * time.Second},
		{spec: "rate:limit=10M,burst=1s", reads: 320, want: 2*time.Second - time.Second},
		{spec: "rate:read=2M,burst=0", reads: 64, writes: 1000, want: 2 * time.Second},
		{spec: "rate:write=512K,burst=0", reads: 1000, writes: 16, want: 2 * time.Second},
		{spec: "rate:limit=4M,read=1M,burst=0", reads: 32, writes: 64, want: 2*time.Second + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			clock := newFakeClock()
			r := openSpec(t, newMemoryWith(t, make([]byte, 4*mib)), tt.spec, Env{Clock: clock})
			defer r.Close()
			p := make([]byte, 64<<10)
			// Reads first, then writes: the per-direction limits add up
			// when they are serial.
			for i := range tt.reads {
				if _, err := r.ReadAt(p, int64(i%64)*int64(len(p))); err != nil {
					t.Fatal(err)
				}
			}
			for i := range tt.writes {
				if _, err := r.WriteAt(p, int64(i%64)*int64(len(p))); err != nil {
					t.Fatal(err)
				}
			}
			got := clock.total()
			if d := math.Abs(float64(got - tt.want)); d > float64(2*time.Millisecond) {
				t.Errorf("took %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRateUnlimitedOps: trims, zeroes, flushes and zero-length requests
// never wait.
func TestRateUnlimitedOps(t *testing.T) {
	clock := newFakeClock()
	r := NewRate(newMemoryWith(t, make([]byte, 1<<20)), RateOptions{Limit: 1, Burst: 0}, Env{Clock: clock})
	defer r.Close()
	for _, op := range []request.Op{request.OpFlush, request.OpTrim, request.OpZero} {
		if err := doOp(r, op, 0, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	mustRead(t, r, 0, 0)
	if got := clock.sleeps(); len(got) != 0 {
		t.Errorf("slept %v, want nothing", got)
	}
}

// TestRateParallel: concurrent requests share the bucket, each booking
// after the previous one: on a clock that stands still, the last of 1 MiB
// of requests at 1 MiB/s waits exactly one second, and every wait is a
// distinct multiple of one request's time.
func TestRateParallel(t *testing.T) {
	clock := newFakeClock()
	clock.frozen = true
	r := NewRate(newMemoryWith(t, make([]byte, 1<<20)), RateOptions{Limit: 1 << 20}, Env{Clock: clock})
	defer r.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			p := make([]byte, 4096)
			for range 32 {
				r.ReadAt(p, int64(g)*4096)
			}
		})
	}
	wg.Wait()
	sleeps := clock.sleeps()
	slices.Sort(sleeps)
	if len(sleeps) != 256 {
		t.Fatalf("%d sleeps, want 256", len(sleeps))
	}
	const one = time.Second / 256
	for i, s := range sleeps {
		if want := time.Duration(i+1) * one; s != want {
			t.Fatalf("sorted sleep %d = %v, want %v", i, s, want)
		}
	}
}

// TestRateFile: the limit follows the file, read again once a second.
func TestRateFile(t *testing.T) {
	clock := newFakeClock()
	path := missingFile(t)
	var logs []string
	env := Env{Clock: clock, Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }}
	r := NewRate(newMemoryWith(t, make([]byte, 1<<20)), RateOptions{Limit: 1 << 20, File: path, Burst: 0}, env)
	defer r.Close()
	steps := []struct {
		write   string // file contents; "-" removes it, "" leaves it
		advance time.Duration
		want    int64
	}{
		{write: "", want: 1 << 20},                                      // no file: limit=
		{write: "2M\n", advance: 500 * time.Millisecond, want: 1 << 20}, // not read again yet
		{write: "", advance: 500 * time.Millisecond, want: 2 << 20},
		{write: "3000000/s", advance: time.Second, want: 3000000},
		{write: "0", advance: time.Second, want: 0},
		{write: "fast", advance: time.Second, want: 0},  // unreadable: kept, logged once
		{write: "fast ", advance: time.Second, want: 0}, // same after trimming: not logged again
		{write: "-", advance: time.Second, want: 1 << 20},
	}
	for i, s := range steps {
		switch s.write {
		case "":
		case "-":
			os.Remove(path)
		default:
			if err := os.WriteFile(path, []byte(s.write), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(s.advance)
		r.ReadAt(make([]byte, 1), 0)
		if got := r.Limit(request.OpRead); got != s.want {
			t.Errorf("step %d (%q): Limit = %d, want %d", i, s.write, got, s.want)
		}
	}
	if len(logs) != 1 || !strings.Contains(logs[0], `"fast" is not a size`) {
		t.Errorf("logged %q, want one line about \"fast\"", logs)
	}
}

// TestRateChangeDropsOldBookings: after the limit is raised, requests do
// not wait for bookings made at the old limit.
func TestRateChangeDropsOldBookings(t *testing.T) {
	clock := newFakeClock()
	path := missingFile(t)
	os.WriteFile(path, []byte("1K"), 0o644)
	r := NewRate(newMemoryWith(t, make([]byte, 1<<20)), RateOptions{File: path, Burst: 0}, Env{Clock: clock})
	defer r.Close()
	r.ReadAt(make([]byte, 1024), 0)
	if got := clock.total(); got != time.Second {
		t.Fatalf("1 KiB at 1 KiB/s took %v, want 1s", got)
	}
	os.WriteFile(path, []byte("1G"), 0o644)
	clock.Advance(time.Second)
	r.ReadAt(make([]byte, 1024), 0)
	if got := clock.total(); got > time.Millisecond {
		t.Errorf("1 KiB at 1 GiB/s took %v, want about 1µs", got)
	}
}
