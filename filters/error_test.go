package filters

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// TestErrorConformance: an error filter that is not triggered (no trigger
// file, rate 0, ranges elsewhere, other ops) is a transparent Source.
func TestErrorConformance(t *testing.T) {
	t.Parallel()
	want := testData(256<<10+512, 1)
	t.Run("not triggered", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sources.Source {
			return NewError(newMemoryWith(t, want), ErrorOptions{Rate: 1, File: missingFile(t)}, Env{})
		}, want)
	})
	t.Run("read-only", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sources.Source {
			return NewError(roSource(newMemoryWith(t, want)), ErrorOptions{Rate: 1, Ops: 1 << request.OpWrite}, Env{})
		}, want)
	})
}

// TestErrorInjects checks which requests fail, request by request.
func TestErrorInjects(t *testing.T) {
	type call struct {
		op      request.Op
		off, n  int64
		wantErr bool
	}
	tests := []struct {
		name  string
		opts  ErrorOptions
		calls []call
	}{
		{name: "everything", opts: ErrorOptions{Rate: 1}, calls: []call{
			{request.OpRead, 0, 512, true}, {request.OpWrite, 4096, 512, true}, {request.OpFlush, 0, 0, true}, {request.OpTrim, 0, 4096, true}, {request.OpZero, 0, 4096, true},
		}},
		{name: "writes only", opts: ErrorOptions{Rate: 1, Ops: 1 << request.OpWrite}, calls: []call{
			{request.OpRead, 0, 512, false}, {request.OpWrite, 4096, 512, true}, {request.OpFlush, 0, 0, false}, {request.OpTrim, 0, 4096, false}, {request.OpZero, 0, 4096, false},
		}},
		{name: "bad sectors", opts: ErrorOptions{Rate: 1, Ranges: []Range{{Start: 8192, End: 8192 + 512}, {Start: 65536, End: 65537}}}, calls: []call{
			{request.OpRead, 0, 8192, false}, {request.OpRead, 0, 8193, true}, {request.OpRead, 8192 + 511, 1, true}, {request.OpRead, 8192 + 512, 4096, false},
			{request.OpWrite, 65536, 1, true}, {request.OpWrite, 65535, 1, false}, {request.OpWrite, 65537, 100, false}, {request.OpRead, 0, 1 << 20, true},
			{request.OpFlush, 0, 0, false}, {request.OpZero, 60000, 10000, true}, {request.OpRead, 8192, 0, false},
		}},
		{name: "after 3", opts: ErrorOptions{Rate: 1, After: 3, Ops: 1 << request.OpRead}, calls: []call{
			{request.OpRead, 0, 512, false}, {request.OpWrite, 0, 512, false}, {request.OpRead, 0, 512, false}, {request.OpRead, 0, 512, false},
			{request.OpRead, 0, 512, true}, {request.OpRead, 0, 512, true},
		}},
		{name: "rate 0", opts: ErrorOptions{Rate: 0}, calls: []call{
			{request.OpRead, 0, 512, false}, {request.OpWrite, 0, 512, false}, {request.OpFlush, 0, 0, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewError(newMemoryWith(t, make([]byte, 1<<20)), tt.opts, Env{})
			defer e.Close()
			for i, c := range tt.calls {
				err := doOp(e, c.op, c.off, c.n)
				if got := err != nil; got != c.wantErr {
					t.Errorf("call %d: %s(off=%d, len=%d) = %v, want error %v", i, c.op, c.off, c.n, err, c.wantErr)
				}
				if err != nil && !errors.Is(err, syscall.EIO) {
					t.Errorf("call %d: %s = %v, want it to wrap EIO", i, c.op, err)
				}
			}
		})
	}
}

// doOp calls the method of src for op.
func doOp(src sources.Source, op request.Op, off, n int64) error {
	switch op {
	case request.OpRead:
		_, err := src.ReadAt(make([]byte, n), off)
		return err
	case request.OpWrite:
		_, err := src.WriteAt(make([]byte, n), off)
		return err
	case request.OpFlush:
		return src.Flush()
	case request.OpTrim:
		return src.Trim(off, n)
	case request.OpZero:
		return src.Zero(off, n, true)
	}
	panic(fmt.Sprint("doOp: ", op))
}

func TestErrorErrno(t *testing.T) {
	for _, e := range errnos {
		t.Run(e.name, func(t *testing.T) {
			f := NewError(newMemoryWith(t, make([]byte, 4096)), ErrorOptions{Rate: 1, Errno: e.errno}, Env{})
			defer f.Close()
			_, err := f.ReadAt(make([]byte, 512), 0)
			var errno syscall.Errno
			if !errors.As(err, &errno) || errno != e.errno {
				t.Errorf("ReadAt = %v, want an error wrapping %s", err, e.name)
			}
		})
	}
}

// TestErrorSeed: the same seed fails the same requests of a serial run; the
// share of failures follows the rate.
func TestErrorSeed(t *testing.T) {
	pattern := func(seed uint64, rate float64) string {
		e := NewError(newMemoryWith(t, make([]byte, 4096)), ErrorOptions{Rate: rate, Seed: &seed}, Env{})
		defer e.Close()
		var b strings.Builder
		for range 2000 {
			if _, err := e.ReadAt(make([]byte, 1), 0); err != nil {
				b.WriteByte('x')
			} else {
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	a, b := pattern(42, 0.25), pattern(42, 0.25)
	if a != b {
		t.Errorf("two runs with seed 42 failed different requests")
	}
	if c := pattern(43, 0.25); c == a {
		t.Errorf("seeds 42 and 43 failed the same requests")
	}
	// 2000 draws at 25%: 500 expected, sd ~19; 6 sd either way is a bug.
	if n := strings.Count(a, "x"); n < 385 || n > 615 {
		t.Errorf("rate 0.25 failed %d of 2000 requests, want about 500", n)
	}
}

func TestErrorTriggerFile(t *testing.T) {
	path := missingFile(t)
	e := NewError(newMemoryWith(t, make([]byte, 4096)), ErrorOptions{Rate: 1, File: path}, Env{})
	defer e.Close()
	steps := []struct {
		on      bool
		wantErr bool
	}{{false, false}, {true, true}, {false, false}, {true, true}}
	for i, s := range steps {
		if i > 0 {
			setTrigger(t, e.trig, path, s.on)
		}
		_, err := e.ReadAt(make([]byte, 512), 0)
		if (err != nil) != s.wantErr {
			t.Errorf("step %d (file exists: %v): ReadAt = %v, want error %v", i, s.on, err, s.wantErr)
		}
	}
}

// TestErrorTriggerPoll: the goroutine notices the file on its own.
func TestErrorTriggerPoll(t *testing.T) {
	path := missingFile(t)
	e := NewError(newMemoryWith(t, make([]byte, 4096)), ErrorOptions{Rate: 1, File: path}, Env{})
	defer e.Close()
	if err := osWriteFile(path); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := e.ReadAt(make([]byte, 512), 0); err != nil {
			break
		}
		if i > 500 {
			t.Fatal("reads still succeed 5 s after the trigger file was created")
		}
		sleepMs(10)
	}
}

func TestErrorLogsRateLimited(t *testing.T) {
	clock := newFakeClock()
	var mu sync.Mutex
	var lines []string
	env := Env{Clock: clock, Logf: func(f string, a ...any) {
		mu.Lock()
		lines = append(lines, fmt.Sprintf(f, a...))
		mu.Unlock()
	}}
	e := NewError(newMemoryWith(t, make([]byte, 1<<20)), ErrorOptions{Rate: 1, Errno: syscall.ENOSPC}, env)
	defer e.Close()
	for range 25 {
		e.WriteAt(make([]byte, 4096), 8192)
	}
	if len(lines) != 10 {
		t.Fatalf("25 errors in one second logged %d lines, want 10: %q", len(lines), lines)
	}
	if want := "error filter: injected ENOSPC into write of 4096 bytes at offset 8192"; lines[0] != want {
		t.Errorf("log line = %q, want %q", lines[0], want)
	}
	clock.Advance(1001 * 1e6)
	e.WriteAt(make([]byte, 4096), 8192)
	if last := lines[len(lines)-1]; !strings.HasSuffix(last, "(15 similar lines suppressed)") {
		t.Errorf("first line of the next second = %q, want it to count the 15 suppressed", last)
	}
}
