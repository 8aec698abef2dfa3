package filters

import (
	"errors"
	"strings"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// OpSet is a set of kinds of request, one bit per request.Op value.
type OpSet uint64

const allOps = OpSet(1<<request.OpRead | 1<<request.OpWrite | 1<<request.OpFlush | 1<<request.OpTrim | 1<<request.OpZero)

// Has reports whether op is in the set.
func (s OpSet) Has(op request.Op) bool { return op < 64 && s&(1<<op) != 0 }

// String joins the names with "+", or returns "all".
func (s OpSet) String() string {
	if s == allOps {
		return "all"
	}
	var n []string
	for _, o := range request.Ops() {
		if s.Has(o) {
			n = append(n, o.String())
		}
	}
	return strings.Join(n, "+")
}

// Observer is a filter that wants to see every request the server serves
// (log, stats). Observe is called concurrently from the server's workers,
// after each reply is queued, and must be quick and must not allocate.
type Observer interface {
	Observe(r request.Request)
}

// Clock is the time the filters that wait (delay, rate) or measure (stats)
// use. Tests pass a fake one.
type Clock interface {
	Now() time.Time
	Sleep(d time.Duration)
}

type realClock struct{}

func (realClock) Now() time.Time        { return time.Now() }
func (realClock) Sleep(d time.Duration) { time.Sleep(d) }

// Env is what filters get from the server process besides their options.
type Env struct {
	// Logf receives the filters' log lines (injected errors, unreadable
	// rate files); nil discards them.
	Logf func(format string, args ...any)
	// Clock is the real clock when nil.
	Clock Clock
	// Restarted is set when the server replaces one that died: filters
	// that write files continue them instead of starting afresh.
	Restarted bool
}

func (e Env) clock() Clock {
	if e.Clock == nil {
		return realClock{}
	}
	return e.Clock
}

func (e Env) logf(format string, args ...any) {
	if e.Logf != nil {
		e.Logf(format, args...)
	}
}

// Stack is a source wrapped in filters.
type Stack struct {
	// Source is the outermost filter (the first spec), or the source
	// itself when there are no filters. Closing it closes every filter and
	// the source.
	Source sources.Source
	// Observers are the log and stats filters, in spec order.
	Observers []Observer
}

// Observe passes r to every observer.
func (s *Stack) Observe(r request.Request) {
	for _, o := range s.Observers {
		o.Observe(r)
	}
}

// ObserveFunc returns s.Observe, or nil when the stack has no observers:
// what the NBD server takes as its observer (nbd.Options.Observe), which
// does not even read the clock when it is nil.
func (s *Stack) ObserveFunc() func(request.Request) {
	if len(s.Observers) == 0 {
		return nil
	}
	return s.Observe
}

// Stats returns the first stats filter of the stack, or nil.
func (s *Stack) Stats() *Stats {
	for _, o := range s.Observers {
		if st, ok := o.(*Stats); ok {
			return st
		}
	}
	return nil
}

// releaser is implemented by every filter: release frees what the filter
// itself holds (goroutines, files) without closing the source it wraps.
type releaser interface {
	release() error
}

// Open wraps next in the filters of specs: the first spec is the outermost,
// nearest the kernel, and the last one wraps next directly. On error, the
// filters already built are released and next is left open.
func Open(next sources.Source, specs []Spec, env Env) (*Stack, error) {
	st := &Stack{Source: next}
	var built []sources.Source
	for i := len(specs) - 1; i >= 0; i-- {
		a, err := argsOf(specs[i])
		if err == nil && a.def.check != nil {
			err = a.def.check(a)
		}
		var src sources.Source
		if err == nil {
			src, err = a.def.open(st.Source, a, env)
		}
		if err != nil {
			for j := len(built) - 1; j >= 0; j-- {
				built[j].(releaser).release()
			}
			return nil, err
		}
		built = append(built, src)
		st.Source = src
		if o, ok := src.(Observer); ok {
			st.Observers = append([]Observer{o}, st.Observers...)
		}
	}
	return st, nil
}

// closeChain releases a filter, then closes the source it wraps.
func closeChain(r releaser, next sources.Source) error {
	return errors.Join(r.release(), next.Close())
}
