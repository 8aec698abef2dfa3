package sourcetest

import (
	"bytes"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// guard is how many bytes past len(p) read watches for writes.
const guard = 64

// read reads n bytes at off into a fresh buffer pre-filled with garbage
// (so that a source which leaves holes unfilled is caught) and followed by
// guard bytes that must stay untouched.
func read(t *testing.T, src sources.Source, off int64, n int) ([]byte, bool) {
	t.Helper()
	buf := bytes.Repeat([]byte{0xa5}, n+guard)
	p := buf[:n]
	got, err := src.ReadAt(p, off)
	if got != n || err != nil {
		t.Errorf("ReadAt(off=%d, len=%d) = %d, %v, want %d, nil", off, n, got, err, n)
		return nil, false
	}
	for i, b := range buf[n:] {
		if b != 0xa5 {
			t.Errorf("ReadAt(off=%d, len=%d) wrote past len(p): byte %d after it is %#x", off, n, i, b)
			return nil, false
		}
	}
	return p, true
}

// checkRead reads [off, off+n) and compares it with the model.
func (c *checker) checkRead(t *testing.T, src sources.Source, m *model, off int64, n int) bool {
	t.Helper()
	got, ok := read(t, src, off, n)
	if !ok {
		return false
	}
	return m.check(t, got, off)
}

func (c *checker) write(t *testing.T, src sources.Source, m *model, p []byte, off int64) bool {
	t.Helper()
	n, err := src.WriteAt(p, off)
	if n != len(p) || err != nil {
		t.Errorf("WriteAt(off=%d, len=%d) = %d, %v, want %d, nil", off, len(p), n, err, len(p))
		return false
	}
	m.write(p, off)
	return true
}

// margin is how far around a modified range checks look, to catch writes
// that spill over.
const margin = 4096 + 17

// checkAround reads [off-margin, off+n+margin), clamped to the source.
func (c *checker) checkAround(t *testing.T, src sources.Source, m *model, off int64, n int) bool {
	t.Helper()
	start := max(0, off-margin)
	end := off + int64(n) // in range, so no overflow
	end += min(margin, c.size-end)
	return c.checkRead(t, src, m, start, int(end-start))
}
