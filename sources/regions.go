package sources

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync/atomic"
	"syscall"
)

// RegionKind says where a Region's bytes come from.
type RegionKind uint8

const (
	// RegionSource bytes are those of a Source, from Region.Offset on.
	// Reads and writes go to the Source.
	RegionSource RegionKind = iota
	// RegionData bytes are held in memory (Region.Data), like the partition
	// tables of a disk built from files. They read back as Data; a write
	// must carry the same bytes, anything else fails with EIO.
	RegionData
	// RegionZero bytes are padding that reads as zeros. A write must carry
	// zeros, anything else fails with EIO.
	RegionZero
)

func (k RegionKind) String() string {
	switch k {
	case RegionSource:
		return "source"
	case RegionData:
		return "data"
	case RegionZero:
		return "zero"
	}
	return fmt.Sprintf("RegionKind(%d)", uint8(k))
}

// Region is one piece of a Regions: Length bytes that start at byte Start of
// the whole.
type Region struct {
	Start, Length int64
	Kind          RegionKind
	// Source and Offset: a RegionSource serves bytes [Offset,
	// Offset+Length) of Source.
	Source Source
	Offset int64
	// Data holds a RegionData's bytes; len(Data) == Length. Regions does
	// not copy it: the builder may fill it in after the layout is known
	// (a backup partition table depends on the disk's size), but not once
	// the Regions is in use.
	Data []byte
	// Name says what the region is, in errors and listings: a file name,
	// "GPT header", "padding".
	Name string
}

// End returns the offset just past the region.
func (r Region) End() int64 { return r.Start + r.Length }

// ErrRegionWrite is wrapped by the errors of writes, zeroes and trims that
// would change bytes a Regions cannot store: its in-memory data (partition
// tables) and its zero padding. It wraps EIO, the error nbdkit's
// partitioning plugin returns for the same writes.
var ErrRegionWrite = fmt.Errorf("sources: write would change bytes that are not stored in any file: %w", syscall.EIO)

// Regions serves a sequence of regions laid end to end as one Source: the
// bytes of other Sources, data held in memory, and zero padding. It is the
// model of the virtual disks built from several files (Concat, and the
// partitioned disks of sources/partitioned), after nbdkit's
// common/regions: a request is split at region boundaries, and the region
// that holds an offset is found by binary search.
//
// Reads of a RegionSource go to its Source; RegionData reads from memory and
// RegionZero reads zeros. Writes, zeroes and trims that reach a
// RegionSource go to its Source. A write to a RegionData must carry the very
// bytes it holds, and a write to a RegionZero must carry zeros, so that
// rewriting a partition table unchanged (or wiping padding) succeeds; any
// other write to them fails with ErrRegionWrite (EIO). Zero succeeds on
// padding and on data that is already zero; Trim does nothing there. A
// request is checked against every region it covers before any of it is
// written, so a refused request changes nothing.
//
// When every Source is read-only (or there is none), the Regions is
// read-only: every modifying call returns ErrReadOnly. When only some are,
// a modifying call that reaches a read-only Source fails with an error
// wrapping ErrReadOnly (EPERM), again before anything is written.
//
// Caps: Parallel when every Source is; Rotational when any is; Flush and
// Trim when a writable Source has them; Zero when every writable Source
// has it. Flush flushes only the Sources written to since their last
// flush.
//
// Limits: the layout is fixed at NewRegions; Sources must not change size.
// Close closes every Source once, in order, even if a Source appears in
// several regions.
type Regions struct {
	regions []Region
	size    int64
	caps    Caps
	srcs    []Source      // distinct Sources, in order of first appearance
	srcOf   []int         // region index -> index into srcs, or -1
	dirty   []atomic.Bool // per srcs entry: written since the last flush
	relay   ExtentRelay   // passes the Sources' extents on
	closed  atomic.Bool
}

// NewRegions returns the Source made of regions, which must be in order,
// adjacent (each starts where the one before ends, the first at 0), not
// empty, and consistent with their Kind (Data of the region's length, a
// Source that holds the region's range). A zero-length region is an error;
// so is a total of 0 bytes (ErrEmpty).
func NewRegions(regions []Region) (*Regions, error) {
	if len(regions) == 0 {
		return nil, fmt.Errorf("sources: no regions: %w", ErrEmpty)
	}
	rs := &Regions{regions: append([]Region(nil), regions...), srcOf: make([]int, len(regions))}
	index := map[Source]int{}
	var end int64
	for i, r := range rs.regions {
		if r.Start != end {
			return nil, fmt.Errorf("sources: region %d (%s) starts at %d, want %d: %w", i, r.Name, r.Start, end, syscall.EINVAL)
		}
		if r.Length <= 0 {
			return nil, fmt.Errorf("sources: region %d (%s) has length %d: %w", i, r.Name, r.Length, ErrEmpty)
		}
		if r.Start > (1<<63-1)-r.Length {
			return nil, fmt.Errorf("sources: region %d (%s) ends past 2^63-1 bytes: %w", i, r.Name, syscall.EFBIG)
		}
		end = r.End()
		rs.srcOf[i] = -1
		switch r.Kind {
		case RegionSource:
			if r.Source == nil {
				return nil, fmt.Errorf("sources: region %d (%s) has no source: %w", i, r.Name, syscall.EINVAL)
			}
			if err := CheckRange(r.Offset, r.Length, r.Source.Size()); err != nil {
				return nil, fmt.Errorf("sources: region %d (%s): %d bytes at offset %d do not fit in a source of %d bytes: %w",
					i, r.Name, r.Length, r.Offset, r.Source.Size(), err)
			}
			j, ok := index[r.Source]
			if !ok {
				j = len(rs.srcs)
				index[r.Source] = j
				rs.srcs = append(rs.srcs, r.Source)
			}
			rs.srcOf[i] = j
		case RegionData:
			if int64(len(r.Data)) != r.Length {
				return nil, fmt.Errorf("sources: region %d (%s) has %d bytes of data for a length of %d: %w", i, r.Name, len(r.Data), r.Length, syscall.EINVAL)
			}
		case RegionZero:
		default:
			return nil, fmt.Errorf("sources: region %d (%s): unknown kind %v: %w", i, r.Name, r.Kind, syscall.EINVAL)
		}
	}
	rs.size = end
	rs.dirty = make([]atomic.Bool, len(rs.srcs))
	rs.caps = regionCaps(rs.srcs)
	return rs, nil
}

// regionCaps combines the capabilities of the Sources, as Regions
// documents.
func regionCaps(srcs []Source) Caps {
	c := Caps{ReadOnly: true, Parallel: true, Zero: true}
	for _, s := range srcs {
		sc := s.Caps()
		c.Parallel = c.Parallel && sc.Parallel
		c.Rotational = c.Rotational || sc.Rotational
		if sc.ReadOnly {
			continue
		}
		c.ReadOnly = false
		c.Flush = c.Flush || sc.Flush
		c.Trim = c.Trim || sc.Trim
		c.Zero = c.Zero && sc.Zero
	}
	if c.ReadOnly {
		c.Flush, c.Trim, c.Zero = false, false, false
	}
	return c
}

// Size returns the end of the last region.
func (rs *Regions) Size() int64 { return rs.size }

// Caps returns the capabilities computed by NewRegions.
func (rs *Regions) Caps() Caps { return rs.caps }

// Regions returns a copy of the layout.
func (rs *Regions) Regions() []Region { return append([]Region(nil), rs.regions...) }

// Find returns the index of the region that holds byte off, or -1 when off
// is outside [0, Size()).
func (rs *Regions) Find(off int64) int {
	if off < 0 || off >= rs.size {
		return -1
	}
	return sort.Search(len(rs.regions), func(i int) bool { return rs.regions[i].End() > off })
}

// each calls fn for every piece of [off, off+length): the region's index,
// the piece's offset inside the region, and its offset from off and length.
// It stops at the first error.
func (rs *Regions) each(off, length int64, fn func(i int, inRegion, at, n int64) error) error {
	if length == 0 {
		return nil
	}
	i := rs.Find(off)
	for at := int64(0); at < length; i++ {
		r := &rs.regions[i]
		in := off + at - r.Start
		n := min(r.Length-in, length-at)
		if err := fn(i, in, at, n); err != nil {
			return err
		}
		at += n
	}
	return nil
}

func (rs *Regions) check(off, length int64) error {
	if rs.closed.Load() {
		return errRegionsClosed
	}
	return CheckRange(off, length, rs.size)
}

var errRegionsClosed = fmt.Errorf("sources: regions: %w", os.ErrClosed)

// ReadAt reads p at off, region by region.
func (rs *Regions) ReadAt(p []byte, off int64) (int, error) {
	if err := rs.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	err := rs.each(off, int64(len(p)), func(i int, in, at, n int64) error {
		r := &rs.regions[i]
		q := p[at : at+n]
		switch r.Kind {
		case RegionSource:
			if _, err := r.Source.ReadAt(q, r.Offset+in); err != nil {
				return err
			}
		case RegionData:
			copy(q, r.Data[in:])
		case RegionZero:
			clear(q)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// refuse checks that a modifying request can be applied to every region of
// [off, off+length): writable Sources only, and for data and padding, the
// bytes they hold already. data is the write's payload, or nil for Zero
// (which must find zeros) and Trim (which touches only Sources).
func (rs *Regions) refuse(op string, off, length int64, data []byte, trim bool) error {
	if rs.caps.ReadOnly {
		return ErrReadOnly
	}
	return rs.each(off, length, func(i int, in, at, n int64) error {
		r := &rs.regions[i]
		switch r.Kind {
		case RegionSource:
			if r.Source.Caps().ReadOnly {
				return fmt.Errorf("sources: %s of %d bytes at offset %d reaches %s: %w", op, length, off, r.Name, ErrReadOnly)
			}
		case RegionData:
			if trim {
				return nil
			}
			ok := false
			if data != nil {
				ok = bytes.Equal(data[at:at+n], r.Data[in:in+n])
			} else {
				ok = isZero(r.Data[in : in+n])
			}
			if !ok {
				return fmt.Errorf("sources: %s of %d bytes at offset %d would change the %s at offset %d: %w",
					op, length, off, r.Name, r.Start+in, ErrRegionWrite)
			}
		case RegionZero:
			if data != nil && !isZero(data[at:at+n]) {
				return fmt.Errorf("sources: %s of %d bytes at offset %d would store data in the %s at offset %d: %w",
					op, length, off, r.Name, r.Start+in, ErrRegionWrite)
			}
		}
		return nil
	})
}

// WriteAt writes the pieces of p that fall in Sources to them, after
// checking the others (see Regions).
func (rs *Regions) WriteAt(p []byte, off int64) (int, error) {
	if err := rs.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := rs.refuse("write", off, int64(len(p)), p, false); err != nil {
		return 0, err
	}
	err := rs.each(off, int64(len(p)), func(i int, in, at, n int64) error {
		r := &rs.regions[i]
		if r.Kind != RegionSource {
			return nil
		}
		_, err := r.Source.WriteAt(p[at:at+n], r.Offset+in)
		// Set after the write: a Flush that starts after WriteAt returns
		// must see it.
		rs.dirty[rs.srcOf[i]].Store(true)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Zero zeros the pieces of the range that fall in Sources; data regions
// in the range must hold zeros already.
func (rs *Regions) Zero(off, length int64, mayTrim bool) error {
	if err := rs.check(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if err := rs.refuse("zero", off, length, nil, false); err != nil {
		return err
	}
	return rs.each(off, length, func(i int, in, at, n int64) error {
		r := &rs.regions[i]
		if r.Kind != RegionSource {
			return nil
		}
		err := r.Source.Zero(r.Offset+in, n, mayTrim)
		rs.dirty[rs.srcOf[i]].Store(true)
		return err
	})
}

// Trim trims the pieces of the range that fall in Sources.
func (rs *Regions) Trim(off, length int64) error {
	if err := rs.check(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if err := rs.refuse("trim", off, length, nil, true); err != nil {
		return err
	}
	return rs.each(off, length, func(i int, in, at, n int64) error {
		r := &rs.regions[i]
		if r.Kind != RegionSource {
			return nil
		}
		err := r.Source.Trim(r.Offset+in, n)
		rs.dirty[rs.srcOf[i]].Store(true)
		return err
	})
}

// Flush flushes every Source written, zeroed or trimmed since its last
// flush; all of them, even when one fails.
func (rs *Regions) Flush() error {
	if rs.closed.Load() {
		return errRegionsClosed
	}
	var errs []error
	for j, s := range rs.srcs {
		if !rs.dirty[j].Swap(false) {
			continue
		}
		if err := s.Flush(); err != nil {
			rs.dirty[j].Store(true) // still not durable: try again next time
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes every Source once. A second Close returns nil.
func (rs *Regions) Close() error {
	if rs.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, s := range rs.srcs {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Layout builds the regions of a virtual disk from the start, one after the
// other; NewRegions(l.Regions()) then serves them.
type Layout struct {
	regions []Region
	end     int64
}

// End returns the offset where the next region will start.
func (l *Layout) End() int64 { return l.end }

// Regions returns the regions added so far.
func (l *Layout) Regions() []Region { return l.regions }

// AddSource appends length bytes of src, from offset 0, and returns the
// region's start.
func (l *Layout) AddSource(name string, src Source, length int64) int64 {
	return l.add(Region{Kind: RegionSource, Source: src, Length: length, Name: name})
}

// AddData appends data, which the caller may still fill in until the
// Regions is built, and returns the region's start.
func (l *Layout) AddData(name string, data []byte) int64 {
	return l.add(Region{Kind: RegionData, Data: data, Length: int64(len(data)), Name: name})
}

// AddZero appends n bytes of zero padding (nothing when n is 0) and
// returns the region's start.
func (l *Layout) AddZero(name string, n int64) int64 {
	if n == 0 {
		return l.end
	}
	return l.add(Region{Kind: RegionZero, Length: n, Name: name})
}

// AlignTo appends zero padding up to the next multiple of align, a power of
// two, and returns the new end.
func (l *Layout) AlignTo(align int64) int64 {
	l.AddZero("padding", alignUp(l.end, align)-l.end)
	return l.end
}

func (l *Layout) add(r Region) int64 {
	r.Start = l.end
	// Adjacent padding merges into one region.
	if n := len(l.regions); n > 0 && r.Kind == RegionZero && l.regions[n-1].Kind == RegionZero {
		l.regions[n-1].Length += r.Length
	} else {
		l.regions = append(l.regions, r)
	}
	l.end += r.Length
	return r.Start
}

// errStop ends a walk over regions when the caller of Extents has seen
// enough.
var errStop = errors.New("sources: stop")

// Extents reports, region by region, a Source's own extents, in-memory
// data as data and zero padding as a hole (it takes no storage).
func (rs *Regions) Extents(off, length int64, fn func(Extent) bool) error {
	if err := rs.check(off, length); err != nil {
		return err
	}
	err := rs.each(off, length, func(i int, in, at, n int64) error {
		r := &rs.regions[i]
		var ok bool
		switch r.Kind {
		case RegionSource:
			var err error
			ok, err = rs.relay.Extents(r.Source, r.Offset-r.Start, off+at, n, fn)
			if err != nil {
				return err
			}
		case RegionData:
			ok = fn(Extent{Off: off + at, Length: n, Kind: ExtentData})
		case RegionZero:
			ok = fn(Extent{Off: off + at, Length: n, Kind: ExtentHole})
		}
		if !ok {
			return errStop
		}
		return nil
	})
	if err == errStop {
		return nil
	}
	return err
}
