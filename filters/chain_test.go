package filters

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// closeCounter counts Close calls on the source at the bottom of a chain.
type closeCounter struct {
	sources.Source
	closes int
}

func (c *closeCounter) Close() error { c.closes++; return c.Source.Close() }

func parseAll(t *testing.T, ss ...string) []Spec {
	t.Helper()
	var out []Spec
	for _, s := range ss {
		sp, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) = %v", s, err)
		}
		out = append(out, sp)
	}
	return out
}

// TestOpenOrder: the first spec is the outermost filter, and each filter
// wraps the next one given.
func TestOpenOrder(t *testing.T) {
	dir := t.TempDir()
	base := &closeCounter{Source: newMemoryWith(t, make([]byte, 1<<20))}
	specs := parseAll(t, "stats", "protect:range=0-4K", "error:rate=0", "log:file="+filepath.Join(dir, "log"), "delay:read=1", "cow")
	st, err := Open(base, specs, Env{Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	src := st.Source
	for {
		types = append(types, reflect.TypeOf(src).String())
		var next sources.Source
		switch f := src.(type) {
		case *Stats:
			next = f.next
		case *Protect:
			next = f.next
		case *Error:
			next = f.next
		case *Log:
			next = f.next
		case *Delay:
			next = f.next
		case *Cow:
			next = f.next
		}
		if next == nil {
			break
		}
		src = next
	}
	want := []string{"*filters.Stats", "*filters.Protect", "*filters.Error", "*filters.Log", "*filters.Delay", "*filters.Cow", "*filters.closeCounter"}
	if !reflect.DeepEqual(types, want) {
		t.Errorf("chain = %v, want %v", types, want)
	}
	if len(st.Observers) != 2 || st.Observers[0] != Observer(st.Source.(*Stats)) || st.Stats() != st.Source {
		t.Errorf("Observers = %v, want the stats then the log filter", st.Observers)
	}
	st.Observe(request.Request{Op: request.OpRead, Length: 512})
	if got := st.Stats().Snapshot().Ops[0].Count; got != 1 {
		t.Errorf("stats count after Observe = %d, want 1", got)
	}
	st.ObserveFunc()(request.Request{Op: request.OpRead, Length: 512})
	if got := st.Stats().Snapshot().Ops[0].Count; got != 2 {
		t.Errorf("stats count after ObserveFunc()(r) = %d, want 2", got)
	}
	// Writes go through protect to cow and leave the base alone.
	if _, err := st.Source.WriteAt([]byte("x"), 0); err == nil {
		t.Error("write to the protected first 4K succeeded")
	}
	mustWrite(t, st.Source, []byte("x"), 8192)
	if got := mustRead(t, base, 8192, 1); got[0] != 0 {
		t.Error("a write through cow reached the source")
	}
	if err := st.Source.Close(); err != nil {
		t.Fatal(err)
	}
	if base.closes != 1 {
		t.Errorf("closing the chain closed the source %d times, want 1", base.closes)
	}
}

// TestStackObserveFunc: the server's observer is nil without log or stats
// filters (so the server does not read the clock) and reaches them all
// otherwise.
func TestStackObserveFunc(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		specs     []string
		observers int
	}{
		{nil, 0},
		{[]string{"error", "delay:read=1"}, 0},
		{[]string{"stats"}, 1},
		{[]string{"log:file=" + filepath.Join(dir, "log"), "error", "stats"}, 2},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.specs, " "), func(t *testing.T) {
			st, err := Open(newMemoryWith(t, make([]byte, 1<<20)), parseAll(t, tt.specs...), Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Source.Close()
			f := st.ObserveFunc()
			if (f != nil) != (tt.observers > 0) || len(st.Observers) != tt.observers {
				t.Fatalf("ObserveFunc() nil = %v with %d observers, want %d observers", f == nil, len(st.Observers), tt.observers)
			}
			if f == nil {
				return
			}
			r := request.Request{Op: request.OpWrite, Length: 4096, Start: time.Now()}
			if n := testing.AllocsPerRun(100, func() { f(r) }); n != 0 {
				t.Errorf("ObserveFunc()(r) allocates %v times, want 0", n)
			}
			if s := st.Stats(); s != nil {
				if got := s.Snapshot().Ops[1]; got.Op != "write" || got.Count != 101 {
					t.Errorf("stats after 101 observed writes = %+v, want 101 writes", got)
				}
			}
		})
	}
}

// TestOpenCaps: capabilities flow up the chain.
func TestOpenCaps(t *testing.T) {
	tests := []struct {
		specs []string
		want  sources.Caps
	}{
		{nil, sources.Caps{Parallel: true, Trim: true, Zero: true, InMemory: true}},
		// Filters that may block (delay, rate, log, cow) drop InMemory.
		{[]string{"error", "delay:read=1", "rate:limit=1M", "stats"}, sources.Caps{Parallel: true, Trim: true, Zero: true}},
		{[]string{"error", "stats"}, sources.Caps{Parallel: true, Trim: true, Zero: true, InMemory: true}},
		{[]string{"readonly"}, sources.Caps{ReadOnly: true, Parallel: true, InMemory: true}},
		{[]string{"error", "readonly"}, sources.Caps{ReadOnly: true, Parallel: true, InMemory: true}},
		{[]string{"cow", "readonly"}, sources.Caps{Parallel: true, Trim: true, Zero: true}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.specs, " "), func(t *testing.T) {
			st, err := Open(newMemoryWith(t, make([]byte, 1<<20)), parseAll(t, tt.specs...), Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Source.Close()
			if got := st.Source.Caps(); got != tt.want {
				t.Errorf("Caps() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestOpenErrorReleases: when a filter cannot be built, the ones built
// already are released (the log file is closed and complete) and the source
// is left open.
func TestOpenErrorReleases(t *testing.T) {
	dir := t.TempDir()
	exists := filepath.Join(dir, "exists")
	os.WriteFile(exists, nil, 0o644)
	base := &closeCounter{Source: newMemoryWith(t, make([]byte, 1<<20))}
	specs := parseAll(t, "cow:file="+exists, "log:file="+filepath.Join(dir, "log"), "error:file="+filepath.Join(dir, "t"))
	fds, goroutines := openFDs(t), runtime.NumGoroutine()
	_, err := Open(base, specs, Env{})
	if err == nil || !strings.Contains(err.Error(), "cow filter: overlay file "+exists+" exists") {
		t.Fatalf("Open = %v, want the cow filter's error", err)
	}
	if base.closes != 0 {
		t.Errorf("a failed Open closed the source %d times, want 0", base.closes)
	}
	mustRead(t, base, 0, 512)
	if got := openFDs(t); got != fds {
		t.Errorf("%d descriptors open after a failed Open, want %d (the log file must be closed)", got, fds)
	}
	// The trigger and log goroutines have ended.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after a failed Open, want %d", runtime.NumGoroutine(), goroutines)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
