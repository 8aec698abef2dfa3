package sources_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// patterned returns a Memory of size bytes filled with random data, and the
// data.
func patterned(t testing.TB, size int) (*sources.Memory, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 3))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	m := newMemory(t, int64(size))
	if _, err := m.WriteAt(data, 0); err != nil {
		t.Fatalf("WriteAt = %v", err)
	}
	return m, data
}

func TestWindowConformance(t *testing.T) {
	const size = 1<<20 + 3*512
	tests := []struct {
		name           string
		offset, length int64
	}{
		{name: "whole", offset: 0, length: size},
		{name: "head", offset: 0, length: 4096},
		{name: "tail", offset: size - 70000, length: 70000},
		{name: "unaligned middle", offset: 12345, length: 300001},
		{name: "one byte", offset: 999, length: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var data []byte
			open := func(t *testing.T) sources.Source {
				var m *sources.Memory
				m, data = patterned(t, size)
				w, err := sources.NewWindow(m, tt.offset, tt.length)
				if err != nil {
					t.Fatalf("NewWindow(%d, %d) = %v", tt.offset, tt.length, err)
				}
				return w
			}
			_, data = patterned(t, size)
			sourcetest.Run(t, open, data[tt.offset:tt.offset+tt.length])
		})
	}
}

// TestWindowReadOnlyConformance checks that a window over a read-only
// source is read-only too.
func TestWindowReadOnlyConformance(t *testing.T) {
	_, data := patterned(t, 64<<10)
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		m, _ := patterned(t, 64<<10)
		w, err := sources.NewWindow(readOnly{m}, 100, 30000)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}, data[100:30100])
}

func TestNewWindowErrors(t *testing.T) {
	const size = 8192
	tests := []struct {
		name           string
		offset, length int64
		want           error
	}{
		{name: "empty", offset: 0, length: 0, want: sources.ErrEmpty},
		{name: "empty at end", offset: size, length: 0, want: sources.ErrEmpty},
		{name: "negative offset", offset: -1, length: 10, want: sources.ErrRange},
		{name: "negative length", offset: 0, length: -1, want: sources.ErrRange},
		{name: "past end", offset: size, length: 1, want: sources.ErrRange},
		{name: "across end", offset: size - 1, length: 2, want: sources.ErrRange},
		{name: "overflow", offset: 4096, length: math.MaxInt64, want: sources.ErrRange},
	}
	m := newMemory(t, size)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := sources.NewWindow(m, tt.offset, tt.length)
			if !errors.Is(err, tt.want) {
				t.Errorf("NewWindow(off=%d, len=%d) = %v, %v, want nil, %v", tt.offset, tt.length, w, err, tt.want)
			}
		})
	}
}

// TestWindowMapsOffsets checks that each call reaches the source underneath
// at the shifted offset and nowhere else.
func TestWindowMapsOffsets(t *testing.T) {
	const size, offset, length = 1 << 20, 300000, 5000
	tests := []struct {
		name string
		op   func(w *sources.Window) error
		// want changes data, the contents of the source underneath, as
		// the op should have.
		want func(data []byte)
	}{
		{
			name: "write",
			op:   func(w *sources.Window) error { _, err := w.WriteAt([]byte{1, 2, 3}, 10); return err },
			want: func(data []byte) { copy(data[offset+10:], []byte{1, 2, 3}) },
		},
		{
			name: "write at the window's end",
			op:   func(w *sources.Window) error { _, err := w.WriteAt([]byte{4, 5}, length-2); return err },
			want: func(data []byte) { copy(data[offset+length-2:], []byte{4, 5}) },
		},
		{
			name: "zero",
			op:   func(w *sources.Window) error { return w.Zero(0, 700, false) },
			want: func(data []byte) { clear(data[offset : offset+700]) },
		},
		{
			name: "zero the whole window",
			op:   func(w *sources.Window) error { return w.Zero(0, length, true) },
			want: func(data []byte) { clear(data[offset : offset+length]) },
		},
		{
			name: "write past the window's end fails",
			op: func(w *sources.Window) error {
				if _, err := w.WriteAt([]byte{1, 2}, length-1); err == nil {
					return errors.New("WriteAt across the window's end = nil, want an error")
				}
				return nil
			},
			want: func(data []byte) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, data := patterned(t, size)
			w, err := sources.NewWindow(m, offset, length)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.op(w); err != nil {
				t.Fatal(err)
			}
			tt.want(data)
			got := make([]byte, size)
			if _, err := m.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got, data); i >= 0 {
				t.Errorf("byte %d of the source underneath = %d, want %d", i, got[i], data[i])
			}
			// Reading through the window gives the same bytes.
			p := make([]byte, length)
			if _, err := w.ReadAt(p, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, data[offset:offset+length]) {
				t.Errorf("ReadAt through the window differs from the source underneath")
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func TestWindowForwards(t *testing.T) {
	caps := sources.Caps{ReadOnly: false, Flush: true, Trim: true, Zero: false, Parallel: true, Rotational: true}
	r := &recorder{size: 1 << 20, caps: caps}
	w, err := sources.NewWindow(r, 4096, 8192)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Caps(); got != caps {
		t.Errorf("Caps() = %v, want %v", got, caps)
	}
	if err := w.Trim(100, 200); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{"trim 4196 200", "flush", "close"}
	if len(r.calls) != len(want) {
		t.Fatalf("calls = %q, want %q", r.calls, want)
	}
	for i := range want {
		if r.calls[i] != want[i] {
			t.Errorf("call %d = %q, want %q", i, r.calls[i], want[i])
		}
	}
}

// readOnly makes a Source read-only, as a read-only filter would.
type readOnly struct{ next sources.Source }

func (r readOnly) ReadAt(p []byte, off int64) (int, error) { return r.next.ReadAt(p, off) }
func (r readOnly) WriteAt(p []byte, off int64) (int, error) {
	if err := sources.CheckRange(off, int64(len(p)), r.Size()); err != nil {
		return 0, err
	}
	return 0, sources.ErrReadOnly
}
func (r readOnly) Size() int64 { return r.next.Size() }
func (r readOnly) Caps() sources.Caps {
	c := r.next.Caps()
	c.ReadOnly, c.Trim, c.Zero, c.Flush = true, false, false, false
	return c
}
func (r readOnly) Flush() error { return nil }
func (r readOnly) Trim(off, length int64) error {
	if err := sources.CheckRange(off, length, r.Size()); err != nil {
		return err
	}
	return sources.ErrReadOnly
}
func (r readOnly) Zero(off, length int64, mayTrim bool) error { return r.Trim(off, length) }
func (r readOnly) Close() error                               { return r.next.Close() }

// recorder is a Source that records the calls it gets.
type recorder struct {
	size  int64
	caps  sources.Caps
	calls []string
}

func (r *recorder) ReadAt(p []byte, off int64) (int, error) {
	r.calls = append(r.calls, fmt.Sprintf("read %d %d", off, len(p)))
	return len(p), nil
}
func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	r.calls = append(r.calls, fmt.Sprintf("write %d %d", off, len(p)))
	return len(p), nil
}
func (r *recorder) Size() int64        { return r.size }
func (r *recorder) Caps() sources.Caps { return r.caps }
func (r *recorder) Flush() error {
	r.calls = append(r.calls, "flush")
	return nil
}
func (r *recorder) Trim(off, length int64) error {
	r.calls = append(r.calls, fmt.Sprintf("trim %d %d", off, length))
	return nil
}
func (r *recorder) Zero(off, length int64, mayTrim bool) error {
	r.calls = append(r.calls, fmt.Sprintf("zero %d %d %v", off, length, mayTrim))
	return nil
}
func (r *recorder) Close() error {
	r.calls = append(r.calls, "close")
	return nil
}
