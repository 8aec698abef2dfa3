package sourcetest

import (
	"bytes"
	"io"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// Run checks the sources returned by open, whose contents must be want.
//
// open is called once per sub-test with that sub-test's t and must return a
// new Source (or one reset to want: sub-tests write to it), failing t if it
// cannot. Run closes every Source it opens; open may register its own
// cleanups, such as removing files, with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) sources.Source, want []byte) {
	t.Helper()
	RunSparse(t, open, int64(len(want)), bytes.NewReader(want))
}

// RunSparse is Run for sources too large to hold a copy of: size is the
// expected Size and want reads the expected contents of [0, size), such as
// Zeros{} for a new Memory. want.ReadAt must fill p for every in-range
// request (returning io.EOF along with a full p at the end is accepted).
//
// RunSparse keeps what it writes in a sparse model, so it works for sizes up
// to 2^63-1; reads and writes touch at most a few MiB.
func RunSparse(t *testing.T, open func(t *testing.T) sources.Source, size int64, want io.ReaderAt) {
	t.Helper()
	if size <= 0 {
		t.Fatalf("sourcetest: size %d, want > 0", size)
	}
	c := &checker{open: open, size: size, ref: want}

	src := open(t)
	c.caps = src.Caps()
	if err := src.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}

	tests := []struct {
		name   string
		skip   string // why the sub-test does not apply, if it does not
		closes bool   // fn closes src itself
		fn     func(t *testing.T, src sources.Source)
	}{
		{name: "Size", fn: c.testSize},
		{name: "Caps", fn: c.testCaps},
		{name: "ReadRandom", fn: c.testReadRandom},
		{name: "ReadEnd", fn: c.testReadEnd},
		{name: "OutOfRange", fn: c.testOutOfRange},
		{name: "ZeroLength", fn: c.testZeroLength},
		{name: "ReadParallel", skip: c.ifNot(c.caps.Parallel, "Caps().Parallel is false"), fn: c.testReadParallel},
		{name: "ReadOnly", skip: c.ifNot(c.caps.ReadOnly, "the source is writable"), fn: c.testReadOnly},
		{name: "WriteRead", skip: c.ifNot(!c.caps.ReadOnly, "the source is read-only"), fn: c.testWriteRead},
		{name: "WriteParallel", skip: c.ifNot(!c.caps.ReadOnly && c.caps.Parallel, "the source is read-only or not parallel"), fn: c.testWriteParallel},
		{name: "Zero", skip: c.ifNot(!c.caps.ReadOnly, "the source is read-only"), fn: c.testZero},
		{name: "Trim", skip: c.ifNot(!c.caps.ReadOnly, "the source is read-only"), fn: c.testTrim},
		{name: "Flush", fn: c.testFlush},
		{name: "CloseTwice", closes: true, fn: c.testCloseTwice},
	}
	for _, tt := range tests {
		// A sub-test that does not apply to the source is not run (no
		// SKIP line: nothing was left out that could have run); the log
		// says why.
		if tt.skip != "" {
			t.Logf("%s does not apply: %s", tt.name, tt.skip)
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			src := open(t)
			if !tt.closes {
				t.Cleanup(func() {
					if err := src.Close(); err != nil {
						t.Errorf("Close() = %v, want nil", err)
					}
				})
			}
			tt.fn(t, src)
		})
	}
}

// Zeros is an io.ReaderAt of endless zeros: the reference contents of a new
// sparse source, for RunSparse.
type Zeros struct{}

// ReadAt clears p.
func (Zeros) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

type checker struct {
	open func(t *testing.T) sources.Source
	size int64
	ref  io.ReaderAt
	caps sources.Caps
}

func (c *checker) ifNot(cond bool, why string) string {
	if cond {
		return ""
	}
	return why
}
