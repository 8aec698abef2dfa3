package filters

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/sources"
)

// fakeClock is a Clock whose Sleep advances time at once and records the
// duration, so tests of delays and rates take no time and are exact.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept []time.Duration
	// frozen clocks record sleeps without advancing: for concurrent
	// sleepers, whose sleeps overlap in real time but would add up here.
	frozen bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	if !c.frozen {
		c.now = c.now.Add(d)
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// sleeps returns and forgets the recorded sleeps.
func (c *fakeClock) sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slept
	c.slept = nil
	return s
}

func (c *fakeClock) total() time.Duration {
	var t time.Duration
	for _, d := range c.sleeps() {
		t += d
	}
	return t
}

// testData returns n reproducible random bytes.
func testData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// newMemoryWith returns a Memory source holding data.
func newMemoryWith(t testing.TB, data []byte) *sources.Memory {
	t.Helper()
	m, err := sources.NewMemory(int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	return m
}

// roSource is a read-only view of a source, like attach's -r wrapper, for
// testing filters over read-only sources.
func roSource(next sources.Source) sources.Source {
	return NewProtect(next, ProtectOptions{})
}

// missingFile returns a path in a temporary directory that does not exist.
func missingFile(t *testing.T) string {
	return filepath.Join(t.TempDir(), "trigger")
}

// setTrigger creates or removes path and makes tr notice at once.
func setTrigger(t *testing.T, tr *trigger, path string, on bool) {
	t.Helper()
	if on {
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	tr.check()
}

func mustRead(t *testing.T, src sources.Source, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if got, err := src.ReadAt(p, off); got != n || err != nil {
		t.Fatalf("ReadAt(off=%d, len=%d) = %d, %v, want %d, nil", off, n, got, err, n)
	}
	return p
}

func mustWrite(t *testing.T, src sources.Source, p []byte, off int64) {
	t.Helper()
	if got, err := src.WriteAt(p, off); got != len(p) || err != nil {
		t.Fatalf("WriteAt(off=%d, len=%d) = %d, %v, want %d, nil", off, len(p), got, err, len(p))
	}
}

func osWriteFile(path string) error { return os.WriteFile(path, nil, 0o644) }

func sleepMs(n int) { time.Sleep(time.Duration(n) * time.Millisecond) }
