package vmdk

import (
	"fmt"
	"syscall"

	"github.com/nbdloop/nbdloop/sources"
)

// find returns the index of the extent holding byte off (< d.size).
func (d *Disk) find(off int64) int {
	lo, hi := 0, len(d.extents)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if d.extents[m].end <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// ReadAt reads len(p) bytes at off.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if err := sources.CheckRange(off, int64(len(p)), d.size); err != nil {
		return 0, err
	}
	if d.closed.Load() {
		return 0, errClosed
	}
	if err := d.readAt(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *Disk) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		x := &d.extents[d.find(off)]
		n := min(int64(len(p)), x.end-off)
		q, rel := p[:n], off-x.start
		var err error
		switch x.kind {
		case kindZero:
			clear(q)
		case kindNoAccess:
			err = fmt.Errorf("%s: NOACCESS extent: %w", x.name, syscall.EIO)
		case kindFlat:
			_, err = x.flat.ReadAt(q, rel)
		case kindSparse:
			err = x.sp.readAt(q, rel, x.parent)
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// modify runs fn over the extents of [off, off+length) after the checks
// every modifying call makes.
func (d *Disk) modify(off, length int64, fn func(x *extent, rel, n, done int64) error) error {
	if err := sources.CheckRange(off, length, d.size); err != nil {
		return err
	}
	if d.closed.Load() {
		return errClosed
	}
	if d.caps.ReadOnly {
		if d.stream {
			return ErrStreamReadOnly
		}
		return sources.ErrReadOnly
	}
	if length > 0 {
		d.cidOnce.Do(func() { d.cidErr = d.newCID() })
		if d.cidErr != nil {
			return d.cidErr
		}
	}
	var done int64
	for done < length {
		x := &d.extents[d.find(off+done)]
		n := min(length-done, x.end-(off+done))
		if !x.writable && x.kind != kindZero {
			return fmt.Errorf("%s: %w", x.name, errExtentReadOnly)
		}
		err := fn(x, off+done-x.start, n, done)
		if x.dirty != nil {
			x.dirty.Store(true)
		}
		if err != nil {
			return err
		}
		done += n
	}
	return nil
}

// WriteAt writes p at off.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	err := d.modify(off, int64(len(p)), func(x *extent, rel, n, done int64) error {
		q := p[done : done+n]
		switch x.kind {
		case kindFlat:
			_, err := x.flat.WriteAt(q, rel)
			return err
		case kindSparse:
			return x.sp.writeAt(q, rel, x.parent)
		}
		return fmt.Errorf("%s: cannot hold data: %w", x.name, errExtentReadOnly)
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Zero makes the range read as zeros (see the package comment).
func (d *Disk) Zero(off, length int64, mayTrim bool) error {
	return d.modify(off, length, func(x *extent, rel, n, _ int64) error {
		switch x.kind {
		case kindFlat:
			return x.flat.Zero(rel, n, mayTrim)
		case kindSparse:
			return x.sp.zero(rel, n, mayTrim, x.parent)
		}
		return nil // a ZERO extent reads as zeros already
	})
}

// Trim turns the whole grains of the range into zeroed-grain entries where
// the header allows it, punches holes in flat extents where the filesystem
// can, and otherwise does nothing.
func (d *Disk) Trim(off, length int64) error {
	return d.modify(off, length, func(x *extent, rel, n, _ int64) error {
		switch x.kind {
		case kindFlat:
			return x.flat.Trim(rel, n)
		case kindSparse:
			if !x.sp.zeroGrain {
				return nil
			}
			gb := x.sp.grainBytes
			lo := (rel + gb - 1) / gb * gb
			hi := (rel + n) / gb * gb
			if rel+n == x.sp.size {
				hi = rel + n // the last grain may be cut short
			}
			if lo >= hi {
				return nil
			}
			return x.sp.zero(lo, hi-lo, true, x.parent)
		}
		return nil
	})
}

// Flush makes completed writes durable: fdatasync of every extent file
// written since the last Flush.
func (d *Disk) Flush() error {
	if d.closed.Load() {
		return errClosed
	}
	var first error
	for i := range d.extents {
		if err := d.extents[i].flush(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// flush syncs the extent's file if it was written since the last flush.
func (x *extent) flush() error {
	if !x.writable || x.dirty == nil || !x.dirty.Swap(false) {
		return nil
	}
	var err error
	switch x.kind {
	case kindFlat:
		err = x.flat.Flush()
	case kindSparse:
		err = x.sp.flush()
	}
	if err != nil {
		x.dirty.Store(true)
	}
	return err
}
