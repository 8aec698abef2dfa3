package sources

import (
	"fmt"

	"github.com/nbdloop/nbdloop/internal/freelist"
)

// ExtentKind says what a range of a Source holds, as far as the Source
// knows without reading it.
type ExtentKind uint8

const (
	// ExtentData is a range that may hold any bytes: written data, or a
	// range the Source knows nothing about.
	ExtentData ExtentKind = iota
	// ExtentZero is a range that reads as zeros and has storage allocated
	// (a zeroed range of an image that keeps its clusters, say).
	ExtentZero
	// ExtentHole is a range that reads as zeros and has no storage
	// allocated: a hole in a sparse file, an unallocated cluster.
	ExtentHole
)

// String returns data, zero or hole.
func (k ExtentKind) String() string {
	switch k {
	case ExtentData:
		return "data"
	case ExtentZero:
		return "zero"
	case ExtentHole:
		return "hole"
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// Extent is Length bytes of a Source from offset Off, all of one Kind.
type Extent struct {
	Off, Length int64
	Kind        ExtentKind
}

// End returns the offset just past e.
func (e Extent) End() int64 { return e.Off + e.Length }

// Extenter is a Source that can tell its holes and zeros from its data
// without reading them (sparse files, disk images). It is optional: a
// Source without it is all data (Extents below).
//
// Extents calls fn with consecutive extents, in order, that cover
// [off, off+length) exactly: the first starts at off, each starts where
// the one before ended, none is empty, and the last ends at off+length.
// Neighbours may have the same kind. It stops early, with nil, when fn
// returns false. Its error is the Source's (a failed lseek, an unreadable
// table), after which fn is not called again; a range outside the Source
// is ErrRange. The same concurrency rules apply as to ReadAt.
//
// An Extent never says more than the Source knows: a range reported as a
// hole or zeros must read as zeros, while data may read as anything,
// zeros included.
type Extenter interface {
	Extents(off, length int64, fn func(Extent) bool) error
}

// Extents calls src.Extents when src is an Extenter, and otherwise calls
// fn once with the whole range as ExtentData. Filters and composites that
// do not change where a Source's bytes are use it to pass their Source's
// extents on.
func Extents(src Source, off, length int64, fn func(Extent) bool) error {
	if err := CheckRange(off, length, src.Size()); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if x, ok := src.(Extenter); ok {
		return x.Extents(off, length, fn)
	}
	fn(Extent{Off: off, Length: length, Kind: ExtentData})
	return nil
}

// ExtentRelay passes the extents of a Source underneath on to a caller's
// callback, shifted to the caller's offsets: how a window, a composite or
// a filter reports the extents of the Sources it is made of. Unlike a
// callback made per call, it allocates nothing once warm. The zero value
// is ready for use; it is safe for concurrent use, and a Source keeps one
// for all its calls (it must not be copied after first use).
type ExtentRelay struct {
	walks freelist.List[relayWalk]
}

// relayWalk is the state of one ExtentRelay.Extents call.
type relayWalk struct {
	fn      func(Extent) bool
	shift   int64
	stopped bool
	pass    func(Extent) bool // the walk's extent method, bound once
}

func (w *relayWalk) extent(e Extent) bool {
	e.Off -= w.shift
	w.stopped = !w.fn(e)
	return !w.stopped
}

// Extents calls Extents(src, off+shift, length, ...) and passes each
// extent on to fn moved back by shift, so that fn sees [off, off+length).
// more is false when fn returned false (the walk then stopped); err is
// Extents' error.
func (r *ExtentRelay) Extents(src Source, shift, off, length int64, fn func(Extent) bool) (more bool, err error) {
	w := r.walks.Get()
	if w == nil {
		w = &relayWalk{}
		w.pass = w.extent
	}
	w.fn, w.shift, w.stopped = fn, shift, false
	err = Extents(src, off+shift, length, w.pass)
	more = !w.stopped
	w.fn = nil
	r.walks.Put(w)
	return more, err
}
