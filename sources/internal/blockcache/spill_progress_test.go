package blockcache

import (
	"sync"
	"testing"
	"time"
)

// TestSpillProgress checks Options.SpillProgress: one call per decoded
// chunk of the Spill segments, done never decreasing, total their size,
// and a last call with done == total; segments not marked Spill report
// nothing.
func TestSpillProgress(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int64
		spill []int // segments marked Spill
		chunk int64
		calls int // expected calls (chunks of the Spill segments)
	}{
		{name: "one segment", sizes: []int64{1<<20 + 5}, spill: []int{0}, chunk: 256 << 10, calls: 5},
		{name: "two segments", sizes: []int64{512 << 10, 300 << 10}, spill: []int{0, 1}, chunk: 256 << 10, calls: 4},
		{name: "no spill", sizes: []int64{512 << 10}, chunk: 256 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var total int64
			for _, s := range tt.sizes {
				total += s
			}
			var spillTotal int64
			f := newFake(testData(int(total)), tt.sizes...)
			for _, i := range tt.spill {
				f.segs[i].Spill = true
				spillTotal += tt.sizes[i]
			}
			var mu sync.Mutex
			var got [][2]int64
			finished := make(chan struct{})
			c, err := New(f.segs, f.open, Options{Chunk: tt.chunk, SpillDir: t.TempDir(), SpillProgress: func(done, total int64) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, [2]int64{done, total})
				if done == total {
					close(finished)
				}
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tt.calls > 0 {
				select {
				case <-finished:
				case <-time.After(30 * time.Second):
					t.Fatal("the decode did not report its end in 30 s")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != tt.calls {
				t.Errorf("%d calls, want %d: %v", len(got), tt.calls, got)
			}
			var last int64
			for _, g := range got {
				if g[1] != spillTotal || g[0] < last || g[0] > g[1] {
					t.Errorf("call (%d, %d) after done %d: want done rising to total %d", g[0], g[1], last, spillTotal)
				}
				last = g[0]
			}
			if st := c.Stats(); tt.calls > 0 && st.SpillDone != spillTotal {
				t.Errorf("Stats().SpillDone = %d, want %d", st.SpillDone, spillTotal)
			}
		})
	}
}
