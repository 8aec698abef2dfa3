package sourcetest

import (
	"fmt"
	"math"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

func (c *checker) testOutOfRange(t *testing.T, src sources.Source) {
	s := c.size
	tests := []struct {
		name     string
		off, len int64
	}{
		{name: "at end", off: s, len: 1},
		{name: "across end", off: s - 1, len: 2},
		{name: "far past end", off: s + 4096, len: 512},
		{name: "negative offset", off: -1, len: 1},
		{name: "max offset", off: math.MaxInt64, len: 1},
		{name: "overflowing end", off: s / 2, len: math.MaxInt64},
		{name: "min offset", off: math.MinInt64, len: 1},
	}
	m := newModel(c.size, c.ref)
	for _, tt := range tests {
		// A request that is too long for memory is tested on Trim and Zero
		// only.
		n := tt.len
		if n > 1<<20 {
			n = 0
		}
		if n > 0 {
			p := make([]byte, n)
			if got, err := noPanic(t, "ReadAt", func() (int, error) { return src.ReadAt(p, tt.off) }); err == nil || got >= len(p) {
				t.Errorf("%s: ReadAt(off=%d, len=%d) = %d, %v, want an error", tt.name, tt.off, n, got, err)
			}
			fillRandom(newRand(tt.name), p)
			if got, err := noPanic(t, "WriteAt", func() (int, error) { return src.WriteAt(p, tt.off) }); err == nil || got >= len(p) {
				t.Errorf("%s: WriteAt(off=%d, len=%d) = %d, %v, want an error", tt.name, tt.off, n, got, err)
			}
		}
		if _, err := noPanic(t, "Trim", func() (int, error) { return 0, src.Trim(tt.off, tt.len) }); err == nil {
			t.Errorf("%s: Trim(off=%d, len=%d) = nil, want an error", tt.name, tt.off, tt.len)
		}
		for _, mayTrim := range []bool{false, true} {
			if _, err := noPanic(t, "Zero", func() (int, error) { return 0, src.Zero(tt.off, tt.len, mayTrim) }); err == nil {
				t.Errorf("%s: Zero(off=%d, len=%d, mayTrim=%v) = nil, want an error", tt.name, tt.off, tt.len, mayTrim)
			}
		}
	}
	for _, l := range []int64{-1, math.MinInt64} {
		if _, err := noPanic(t, "Trim", func() (int, error) { return 0, src.Trim(0, l) }); err == nil {
			t.Errorf("Trim(off=0, len=%d) = nil, want an error", l)
		}
		if _, err := noPanic(t, "Zero", func() (int, error) { return 0, src.Zero(0, l, true) }); err == nil {
			t.Errorf("Zero(off=0, len=%d, mayTrim=true) = nil, want an error", l)
		}
	}
	// The bytes next to the end must not have been changed by the
	// failed requests that straddle it.
	c.checkRead(t, src, m, c.size-min(c.size, 4096), int(min(c.size, 4096)))
}

// noPanic calls fn and turns a panic into a test error.
func noPanic(t *testing.T, what string, fn func() (int, error)) (n int, err error) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Errorf("%s panicked: %v", what, v)
			n, err = 0, fmt.Errorf("panic: %v", v)
		}
	}()
	return fn()
}

func (c *checker) testZeroLength(t *testing.T, src sources.Source) {
	m := newModel(c.size, c.ref)
	for _, off := range []int64{0, c.size / 2, c.size} {
		if n, err := src.ReadAt(nil, off); n != 0 || err != nil {
			t.Errorf("ReadAt(nil, off=%d) = %d, %v, want 0, nil", off, n, err)
		}
		if n, err := src.ReadAt([]byte{}, off); n != 0 || err != nil {
			t.Errorf("ReadAt([]byte{}, off=%d) = %d, %v, want 0, nil", off, n, err)
		}
		if c.caps.ReadOnly {
			continue // whether ErrReadOnly or nothing comes first is up to the source
		}
		if n, err := src.WriteAt(nil, off); n != 0 || err != nil {
			t.Errorf("WriteAt(nil, off=%d) = %d, %v, want 0, nil", off, n, err)
		}
		if err := src.Trim(off, 0); err != nil {
			t.Errorf("Trim(off=%d, len=0) = %v, want nil", off, err)
		}
		if err := src.Zero(off, 0, false); err != nil {
			t.Errorf("Zero(off=%d, len=0, mayTrim=false) = %v, want nil", off, err)
		}
		if err := src.Zero(off, 0, true); err != nil {
			t.Errorf("Zero(off=%d, len=0, mayTrim=true) = %v, want nil", off, err)
		}
	}
	// Nothing changed.
	for _, off := range []int64{0, c.size / 2, c.size - 1} {
		n := int(min(4096, c.size-off))
		c.checkRead(t, src, m, off, n)
	}
}

func (c *checker) testCloseTwice(t *testing.T, src sources.Source) {
	if err := src.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	noPanic(t, "second Close", func() (int, error) { return 0, src.Close() })
}
