package imagetest

import (
	"sync"
	"testing"
	"time"
)

// ProgressRecorder records the calls of a format's Options.Progress.
type ProgressRecorder struct {
	mu    sync.Mutex
	calls [][2]int64
	end   chan struct{} // closed at the first call with done == total
}

// NewProgressRecorder returns an empty recorder.
func NewProgressRecorder() *ProgressRecorder {
	return &ProgressRecorder{end: make(chan struct{})}
}

// Report is the Options.Progress to give the format.
func (r *ProgressRecorder) Report(done, total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if done == total && (len(r.calls) == 0 || r.calls[len(r.calls)-1][0] != total) {
		close(r.end)
	}
	r.calls = append(r.calls, [2]int64{done, total})
}

// Check fails t unless the calls are as wanted: with reports, at least one
// call, each with the same total (total), done never decreasing, and a
// last call with done == total (waited for up to 30 s); without, no call.
func (r *ProgressRecorder) Check(t *testing.T, reports bool, total int64) {
	t.Helper()
	if reports {
		select {
		case <-r.end:
		case <-time.After(30 * time.Second):
			t.Fatal("no progress report with done == total in 30 s")
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !reports {
		if len(r.calls) > 0 {
			t.Errorf("%d progress reports, want none: %v", len(r.calls), r.calls)
		}
		return
	}
	var last int64
	for _, c := range r.calls {
		if c[1] != total || c[0] < last || c[0] > c[1] {
			t.Errorf("progress (%d, %d) after done %d: want done rising to total %d", c[0], c[1], last, total)
		}
		last = c[0]
	}
}

// Calls returns how many calls there were.
func (r *ProgressRecorder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}
