package sourcetest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// Extents checks the extents that sources.Extents reports for
// [off, off+length) of src against the Extenter contract, and returns
// them with neighbours of the same kind merged, for the caller to compare
// with the layout it built. The checks: the extents are consecutive, not
// empty and cover the range exactly; holes and zeros read as zeros; a
// callback that returns false after the first extent is not called again;
// a range past the end is an error, not a panic.
func Extents(t *testing.T, src sources.Source, off, length int64) []sources.Extent {
	t.Helper()
	var got []sources.Extent
	at := off
	err := sources.Extents(src, off, length, func(e sources.Extent) bool {
		switch {
		case e.Off != at:
			t.Errorf("extent %+v starts at %d, want %d (where the one before ended)", e, e.Off, at)
		case e.Length <= 0:
			t.Errorf("extent %+v is empty", e)
		case e.End() > off+length:
			t.Errorf("extent %+v ends past the range's end %d", e, off+length)
		}
		at = e.End()
		if n := len(got); n > 0 && got[n-1].Kind == e.Kind {
			got[n-1].Length += e.Length
		} else {
			got = append(got, e)
		}
		return true
	})
	if err != nil {
		t.Fatalf("Extents(%d, %d): %v", off, length, err)
	}
	if at != off+length {
		t.Errorf("Extents(%d, %d) ended at %d", off, length, at)
	}
	for _, e := range got {
		if e.Kind == sources.ExtentData {
			continue
		}
		buf := make([]byte, min(e.Length, 1<<20))
		for o := e.Off; o < e.End(); o += int64(len(buf)) {
			b := buf[:min(int64(len(buf)), e.End()-o)]
			if _, err := src.ReadAt(b, o); err != nil {
				t.Fatalf("reading %s extent %+v: %v", e.Kind, e, err)
			}
			if !bytes.Equal(b, make([]byte, len(b))) {
				t.Errorf("%s extent %+v does not read as zeros at %d", e.Kind, e, o)
				break
			}
		}
	}
	calls := 0
	if err := sources.Extents(src, off, length, func(sources.Extent) bool { calls++; return false }); err != nil || calls != 1 {
		t.Errorf("Extents with a callback that stops: %d calls, error %v; want 1 call, nil", calls, err)
	}
	if err := sources.Extents(src, src.Size(), 1, func(sources.Extent) bool { return true }); !errors.Is(err, sources.ErrRange) {
		t.Errorf("Extents past the end: %v, want ErrRange", err)
	}
	return got
}
