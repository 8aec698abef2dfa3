package sources

import "fmt"

// Window serves a range of bytes of another Source, like io.SectionReader
// does for an io.ReaderAt: byte 0 of the Window is byte offset of the Source
// underneath. It is how a partition of a disk image, or any other slice of a
// Source, becomes a device of its own.
//
// Options: offset and length, in bytes, neither of which has to be aligned;
// the window must lie inside the Source underneath and must not be empty.
// Every call is forwarded after shifting its offset, so the Window keeps the
// capabilities of the Source underneath (Caps is forwarded unchanged); it
// adds nothing but the range check.
//
// Limits: a Trim or Zero that the Source underneath applies to whole blocks
// only (see File on block devices) has the same granularity here, measured
// from the Source's start, not the window's.
//
// Example, the partition that starts at sector 2048 and is 1 GiB long:
//
//	w, err := sources.NewWindow(disk, 2048*512, 1<<30)
type Window struct {
	next   Source
	offset int64
	length int64
	relay  ExtentRelay
}

// NewWindow returns the length bytes of next that start at offset. Closing
// the Window closes next.
func NewWindow(next Source, offset, length int64) (*Window, error) {
	if length == 0 {
		return nil, fmt.Errorf("sources: window at offset %d: %w", offset, ErrEmpty)
	}
	if err := CheckRange(offset, length, next.Size()); err != nil {
		return nil, fmt.Errorf("sources: window of %d bytes at offset %d does not fit in a source of %d bytes: %w",
			length, offset, next.Size(), err)
	}
	return &Window{next: next, offset: offset, length: length}, nil
}

// Size returns the window's length.
func (w *Window) Size() int64 { return w.length }

// Caps returns the capabilities of the Source underneath.
func (w *Window) Caps() Caps { return w.next.Caps() }

// ReadAt reads from the Source underneath, at off plus the window's offset.
func (w *Window) ReadAt(p []byte, off int64) (int, error) {
	if err := CheckRange(off, int64(len(p)), w.length); err != nil {
		return 0, err
	}
	return w.next.ReadAt(p, w.offset+off)
}

// WriteAt writes to the Source underneath, at off plus the window's offset.
func (w *Window) WriteAt(p []byte, off int64) (int, error) {
	if err := CheckRange(off, int64(len(p)), w.length); err != nil {
		return 0, err
	}
	return w.next.WriteAt(p, w.offset+off)
}

// Flush flushes the Source underneath.
func (w *Window) Flush() error { return w.next.Flush() }

// Trim trims the range in the Source underneath.
func (w *Window) Trim(off, length int64) error {
	if err := CheckRange(off, length, w.length); err != nil {
		return err
	}
	return w.next.Trim(w.offset+off, length)
}

// Zero zeros the range in the Source underneath.
func (w *Window) Zero(off, length int64, mayTrim bool) error {
	if err := CheckRange(off, length, w.length); err != nil {
		return err
	}
	return w.next.Zero(w.offset+off, length, mayTrim)
}

// Close closes the Source underneath.
func (w *Window) Close() error { return w.next.Close() }

// Extents reports the extents of the Source underneath, in the window's
// offsets.
func (w *Window) Extents(off, length int64, fn func(Extent) bool) error {
	if err := CheckRange(off, length, w.length); err != nil {
		return err
	}
	_, err := w.relay.Extents(w.next, w.offset, off, length, fn)
	return err
}
