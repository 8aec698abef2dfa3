package qcow2

import (
	"fmt"

	"github.com/nbdloop/nbdloop/sources"
)

// where a run of the image's bytes comes from, for Extents.
type where uint8

const (
	inImage   where = iota // allocated clusters (compressed ones too): data
	zeroed                 // zero clusters: holes, as qemu reports them
	inBacking              // unallocated: the backing file's extents
)

// Extents reports the image's bytes from its L2 tables: allocated
// clusters and subclusters (compressed ones too) are data, zero ones are
// holes (they read as zeros and hold nothing, as qemu-img map reports
// them), and unallocated ones are what the backing file reports: its own
// extents when it is a qcow2 image, data when it is a raw file, holes past
// its end or without one.
func (im *Image) Extents(off, length int64, fn func(sources.Extent) bool) error {
	if err := sources.CheckRange(off, length, im.size); err != nil {
		return err
	}
	end := off + length
	// The run being gathered: [start, off) from the same place.
	start, cur := off, inImage
	flush := func() (bool, error) {
		if off == start {
			return true, nil
		}
		s := start
		start = off
		switch cur {
		case inImage:
			return fn(sources.Extent{Off: s, Length: off - s, Kind: sources.ExtentData}), nil
		case zeroed:
			return fn(sources.Extent{Off: s, Length: off - s, Kind: sources.ExtentHole}), nil
		}
		return im.backingExtents(s, off, fn)
	}
	for off < end {
		ci := off >> im.cbits
		in := off & (im.cs - 1)
		im.meta.RLock()
		entry, bitmap, err := im.lookup(ci)
		im.meta.RUnlock()
		if err != nil {
			return err
		}
		n := min(end-off, im.cs-in)
		w, err := im.clusterWhere(entry, bitmap, ci)
		if err != nil {
			return err
		}
		if im.h.extendedL2 && entry&entryCompressed == 0 {
			// One subcluster at a time.
			scs := im.cs / subclusters
			n = min(n, scs-in%scs)
			w = subclusterWhere(bitmap, in/scs)
		}
		if w != cur {
			if ok, err := flush(); !ok || err != nil {
				return err
			}
			cur = w
		}
		off += n
	}
	_, err := flush()
	return err
}

// clusterWhere says where the bytes of cluster ci, whose L2 entry is
// entry, come from (without extended L2 entries).
func (im *Image) clusterWhere(entry, bitmap uint64, ci int64) (where, error) {
	switch {
	case entry&entryCompressed != 0 || im.h.extendedL2 || im.fullData(entry, bitmap):
		return inImage, nil
	case im.h.version == 3 && entry&entryZero != 0:
		return zeroed, nil
	case entry&offsetMask == 0:
		return inBacking, nil
	}
	return 0, fmt.Errorf("L2 entry %#x of cluster %d: %w", entry, ci, ErrCorrupt)
}

// subclusterWhere says where subcluster sc's bytes come from, by its
// allocation and zero bits.
func subclusterWhere(bitmap uint64, sc int64) where {
	switch {
	case uint32(bitmap)>>sc&1 != 0:
		return inImage
	case uint32(bitmap>>32)>>sc&1 != 0:
		return zeroed
	}
	return inBacking
}

// backingExtents reports [off, end) as the backing file does, and as a
// hole past its end or without one. It returns false when fn did.
func (im *Image) backingExtents(off, end int64, fn func(sources.Extent) bool) (bool, error) {
	more := true
	if im.backing != nil && off < im.backingSize {
		n := min(end, im.backingSize) - off
		// A qcow2 backing file is the one that knows its extents (raw
		// ones are data). The call is on its concrete type so that the
		// callback stays on the stack.
		if b, ok := im.backing.(*Image); ok {
			err := b.Extents(off, n, func(e sources.Extent) bool {
				more = fn(e)
				return more
			})
			if err != nil || !more {
				return false, err
			}
		} else if !fn(sources.Extent{Off: off, Length: n, Kind: sources.ExtentData}) {
			return false, nil
		}
		off += n
	}
	if off < end {
		more = fn(sources.Extent{Off: off, Length: end - off, Kind: sources.ExtentHole})
	}
	return more, nil
}
