package vmdk

import (
	"github.com/nbdloop/nbdloop/sources"
)

// Extents reports the disk's holes, zeros and data from its metadata,
// never from its data: in sparse extents, grains not allocated are holes
// (or, in a delta disk, what the parent reports there, holes past its
// end), zeroed grains (GTE 1) are zeros, allocated grains, compressed
// ones included, are data; flat extents report what their file's
// filesystem says (SEEK_HOLE and SEEK_DATA); ZERO extents are holes and
// NOACCESS extents data (reading them fails).
func (d *Disk) Extents(off, length int64, fn func(sources.Extent) bool) error {
	if err := sources.CheckRange(off, length, d.size); err != nil {
		return err
	}
	_, err := d.extentsOf(off, length, fn)
	return err
}

// extentsOf is Extents within the disk, and says whether fn wants more.
func (d *Disk) extentsOf(off, length int64, fn func(sources.Extent) bool) (bool, error) {
	if d.closed.Load() {
		return false, errClosed
	}
	// The callbacks below are closures over this call's variables that
	// go only to concrete methods (File.Extents, sparse.extents), so that
	// they stay on the stack; fn itself goes on to the parent and, for a
	// flat extent that is not a file, to a relay: Extents runs on every
	// READ the server splits into data and holes.
	end := off + length
	for off < end {
		x := &d.extents[d.find(off)]
		n := min(end, x.end) - off
		more := true
		var err error
		switch x.kind {
		case kindZero:
			more = fn(sources.Extent{Off: off, Length: n, Kind: sources.ExtentHole})
		case kindNoAccess:
			more = fn(sources.Extent{Off: off, Length: n, Kind: sources.ExtentData})
		case kindFlat:
			if f, ok := x.flat.(*sources.File); ok {
				// Called through its concrete type, so that the callback
				// stays on the stack.
				err = f.Extents(off-x.start, n, func(e sources.Extent) bool {
					e.Off += x.start
					more = fn(e)
					return more
				})
			} else {
				more, err = d.relay.Extents(x.flat, -x.start, off, n, fn)
			}
		case kindSparse:
			var perr error
			err = x.sp.extents(off-x.start, n, func(rel, n int64, st int) bool {
				more, perr = d.grainExtents(x.start+rel, n, st, fn)
				return more && perr == nil
			})
			if err == nil {
				err = perr
			}
		}
		if err != nil || !more {
			return more, err
		}
		off += n
	}
	return true, nil
}

// grainExtents reports n bytes at disk offset off of grains in state st
// and returns fn's answer, or the parent's error.
func (d *Disk) grainExtents(off, n int64, st int, fn func(sources.Extent) bool) (bool, error) {
	switch {
	case st == grainData:
		return fn(sources.Extent{Off: off, Length: n, Kind: sources.ExtentData}), nil
	case st == grainZero:
		return fn(sources.Extent{Off: off, Length: n, Kind: sources.ExtentZero}), nil
	case d.parent == nil || off >= d.parent.size:
		return fn(sources.Extent{Off: off, Length: n, Kind: sources.ExtentHole}), nil
	}
	// Unallocated in a delta disk: the parent's extents, holes past its
	// end.
	inParent := min(n, d.parent.size-off)
	ok, err := d.parent.extentsOf(off, inParent, fn)
	if err != nil {
		return false, err
	}
	if ok && inParent < n {
		ok = fn(sources.Extent{Off: off + inParent, Length: n - inParent, Kind: sources.ExtentHole})
	}
	return ok, nil
}

// extents calls fn with the runs of [off, off+n) (relative to the extent)
// whose grains share a state (grainUnalloc, grainZero, grainData), in
// order, until fn returns false.
func (e *sparse) extents(off, n int64, fn func(off, n int64, st int) bool) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var buf [64]uint32
	end := off + n
	runStart, runState := off, -1
	for off < end {
		grain := off / e.grainBytes
		got, err := e.gtes(grain, buf[:])
		if err != nil {
			return err
		}
		for i := 0; i < got && off < end; i++ {
			st := e.state(buf[i])
			if st != runState && off > runStart {
				if !fn(runStart, off-runStart, runState) {
					return nil
				}
				runStart = off
			}
			runState = st
			off = min(end, (grain+int64(i)+1)*e.grainBytes)
		}
	}
	if off > runStart {
		fn(runStart, off-runStart, runState)
	}
	return nil
}
