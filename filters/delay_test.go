package filters

import (
	"reflect"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

func TestDelayConformance(t *testing.T) {
	t.Parallel()
	want := testData(256<<10+512, 2)
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		opts := DelayOptions{Jitter: time.Millisecond}
		for _, op := range request.Ops() {
			opts.Delays[op] = time.Duration(op+1) * time.Millisecond
		}
		return NewDelay(newMemoryWith(t, want), opts, Env{Clock: newFakeClock()})
	}, want)
}

// TestDelaySleeps checks the sleeps of each kind of request on a fake
// clock, from specs as the command line gives them.
func TestDelaySleeps(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		spec string
		want map[request.Op][]time.Duration // sleeps of one call of each op
	}{
		{spec: "delay:read=100", want: map[request.Op][]time.Duration{request.OpRead: {100 * ms}}},
		{spec: "delay:write=5ms,flush=1s", want: map[request.Op][]time.Duration{request.OpWrite: {5 * ms}, request.OpFlush: {time.Second}}},
		{spec: "delay:all=7", want: map[request.Op][]time.Duration{request.OpRead: {7 * ms}, request.OpWrite: {7 * ms}, request.OpFlush: {7 * ms}, request.OpTrim: {7 * ms}, request.OpZero: {7 * ms}}},
		{spec: "delay:all=7,trim=0,zero=2", want: map[request.Op][]time.Duration{request.OpRead: {7 * ms}, request.OpWrite: {7 * ms}, request.OpFlush: {7 * ms}, request.OpZero: {2 * ms}}},
		{spec: "delay:jitter=5", want: map[request.Op][]time.Duration{}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			clock := newFakeClock()
			d := openSpec(t, newMemoryWith(t, make([]byte, 1<<20)), tt.spec, Env{Clock: clock})
			defer d.Close()
			for _, op := range request.Ops() {
				if err := doOp(d, op, 4096, 4096); err != nil {
					t.Fatalf("%s: %v", op, err)
				}
				if got := clock.sleeps(); !reflect.DeepEqual(got, tt.want[op]) {
					t.Errorf("%s slept %v, want %v", op, got, tt.want[op])
				}
			}
		})
	}
}

// openSpec parses spec and opens it over next.
func openSpec(t *testing.T, next sources.Source, spec string, env Env) sources.Source {
	t.Helper()
	s, err := Parse(spec)
	if err != nil {
		t.Fatalf("Parse(%q) = %v", spec, err)
	}
	st, err := Open(next, []Spec{s}, env)
	if err != nil {
		t.Fatalf("Open(%q) = %v", spec, err)
	}
	return st.Source
}

// TestDelayJitter: with jitter, each sleep lies in [delay, delay+jitter],
// the seed makes them repeat, and they spread over the interval.
func TestDelayJitter(t *testing.T) {
	run := func(seed uint64) []time.Duration {
		clock := newFakeClock()
		opts := DelayOptions{Jitter: 10 * time.Millisecond, Seed: &seed}
		opts.Delays[request.OpRead] = 20 * time.Millisecond
		d := NewDelay(newMemoryWith(t, make([]byte, 4096)), opts, Env{Clock: clock})
		defer d.Close()
		for range 1000 {
			d.ReadAt(make([]byte, 1), 0)
		}
		return clock.sleeps()
	}
	a := run(1)
	if !reflect.DeepEqual(a, run(1)) {
		t.Error("two runs with seed 1 slept differently")
	}
	var lo, hi int
	for _, s := range a {
		if s < 20*time.Millisecond || s > 30*time.Millisecond {
			t.Fatalf("slept %v, want 20ms..30ms", s)
		}
		if s < 25*time.Millisecond {
			lo++
		} else {
			hi++
		}
	}
	if lo < 400 || hi < 400 {
		t.Errorf("1000 jittered sleeps: %d in the lower half, %d in the upper, want about 500 each", lo, hi)
	}
}

// TestDelayAfter: no delay until the time has passed since open.
func TestDelayAfter(t *testing.T) {
	clock := newFakeClock()
	d := openSpec(t, newMemoryWith(t, make([]byte, 4096)), "delay:read=50,after=2s", Env{Clock: clock})
	defer d.Close()
	steps := []struct {
		advance time.Duration
		want    []time.Duration
	}{
		{0, nil},
		{1999 * time.Millisecond, nil},
		{time.Millisecond, []time.Duration{50 * time.Millisecond}},
		{time.Hour, []time.Duration{50 * time.Millisecond}},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		mustRead(t, d, 0, 512)
		if got := clock.sleeps(); !reflect.DeepEqual(got, s.want) {
			t.Errorf("step %d: slept %v, want %v", i, got, s.want)
		}
	}
}

func TestDelayTriggerFile(t *testing.T) {
	clock := newFakeClock()
	path := missingFile(t)
	opts := DelayOptions{File: path}
	opts.Delays[request.OpWrite] = time.Second
	d := NewDelay(newMemoryWith(t, make([]byte, 4096)), opts, Env{Clock: clock})
	defer d.Close()
	for i, on := range []bool{false, true, false} {
		if i > 0 {
			setTrigger(t, d.trig, path, on)
		}
		mustWrite(t, d, make([]byte, 512), 0)
		want := []time.Duration(nil)
		if on {
			want = []time.Duration{time.Second}
		}
		if got := clock.sleeps(); !reflect.DeepEqual(got, want) {
			t.Errorf("file exists %v: slept %v, want %v", on, got, want)
		}
	}
}
