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
	if d.closed.Load() {
		return errClosed
	}
	stopped := false
	emit := func(e sources.Extent) bool {
		stopped = !fn(e)
		return !stopped
	}
	end := off + length
	for off < end && !stopped {
		x := &d.extents[d.find(off)]
		n := min(end, x.end) - off
		var err error
		switch x.kind {
		case kindZero:
			emit(sources.Extent{Off: off, Length: n, Kind: sources.ExtentHole})
		case kindNoAccess:
			emit(sources.Extent{Off: off, Length: n, Kind: sources.ExtentData})
		case kindFlat:
			err = sources.ExtentsShifted(x.flat, -x.start, off, n, emit)
		case kindSparse:
			var perr error
			err = x.sp.extents(off-x.start, n, func(rel, n int64, st int) bool {
				var ok bool
				ok, perr = d.grainExtents(x.start+rel, n, st, emit)
				return ok && perr == nil
			})
			if err == nil {
				err = perr
			}
		}
		if err != nil {
			return err
		}
		off += n
	}
	return nil
}

// grainExtents reports n bytes at disk offset off of grains in state st
// and returns emit's answer, or the parent's error.
func (d *Disk) grainExtents(off, n int64, st int, emit func(sources.Extent) bool) (bool, error) {
	switch {
	case st == grainData:
		return emit(sources.Extent{Off: off, Length: n, Kind: sources.ExtentData}), nil
	case st == grainZero:
		return emit(sources.Extent{Off: off, Length: n, Kind: sources.ExtentZero}), nil
	case d.parent == nil || off >= d.parent.size:
		return emit(sources.Extent{Off: off, Length: n, Kind: sources.ExtentHole}), nil
	}
	// Unallocated in a delta disk: the parent's extents, holes past its
	// end.
	inParent := min(n, d.parent.size-off)
	ok := true
	if err := d.parent.Extents(off, inParent, func(e sources.Extent) bool {
		ok = emit(e)
		return ok
	}); err != nil {
		return false, err
	}
	if ok && inParent < n {
		ok = emit(sources.Extent{Off: off + inParent, Length: n - inParent, Kind: sources.ExtentHole})
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
