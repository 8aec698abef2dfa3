package sources

import (
	"errors"
	"fmt"
	"syscall"
)

// Concat serves several Sources one after the other as one device, like
// nbdkit's split plugin or `cat a.img b.img c.img` without the copy: byte 0
// of the second part follows the last byte of the first. It is the Source
// behind `nbdloop attach --concat a.img b.img c.img`.
//
// Options (ConcatOptions): Names name the parts in errors and listings;
// Align pads the end with zeros up to a multiple of it (the device's block
// size), since a block device cannot end in a partial sector. The parts
// may have any sizes; only the total is padded.
//
// Reads, writes, Zero and Trim are split at the parts' boundaries and go to
// each part at the matching offset; Flush flushes the parts written since
// their last flush. The padding reads as zeros and cannot store data:
// writing zeros to it, zeroing or trimming it succeeds, writing anything
// else fails with EIO before any byte of the request is written (see
// Regions). File systems never use bytes past their own end, so this
// matters only to tools that write the whole device.
//
// Limits: the parts must be all writable or all read-only
// (ErrMixedReadOnly): a file system spread over them would otherwise fail
// on writes to some of its blocks only. Caps are those of Regions: Parallel
// only when every part is, Flush and Trim when a part has them.
//
// Example, three files as one disk of their total size, rounded up to 512:
//
//	c, err := sources.NewConcat([]sources.Source{a, b, c},
//		sources.ConcatOptions{Names: []string{"a.img", "b.img", "c.img"}, Align: 512})
type Concat struct {
	r   *Regions
	pad int64
}

// ConcatOptions are the options of NewConcat.
type ConcatOptions struct {
	// Names has one name per part, for errors and Regions; missing ones
	// are "part N".
	Names []string
	// Align, a power of two, pads the total size with zeros up to a
	// multiple of it; 0 or 1 adds no padding.
	Align int64
}

// ErrMixedReadOnly is returned by NewConcat when some parts are read-only
// and others are not.
var ErrMixedReadOnly = errors.New("sources: some parts are read-only and others are not")

// NewConcat returns parts laid end to end. At least one part is needed;
// closing the Concat closes every part. On error, the parts are left open.
func NewConcat(parts []Source, opts ConcatOptions) (*Concat, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("sources: concat of no parts: %w", ErrEmpty)
	}
	if opts.Align < 0 || (opts.Align > 1 && opts.Align&(opts.Align-1) != 0) {
		return nil, fmt.Errorf("sources: concat: alignment %d is not a power of two: %w", opts.Align, syscall.EINVAL)
	}
	name := func(i int) string {
		if i < len(opts.Names) && opts.Names[i] != "" {
			return opts.Names[i]
		}
		return fmt.Sprintf("part %d", i+1)
	}
	var l Layout
	firstRO, firstRW := -1, -1
	for i, p := range parts {
		if p.Caps().ReadOnly {
			if firstRO < 0 {
				firstRO = i
			}
		} else if firstRW < 0 {
			firstRW = i
		}
		if p.Size() <= 0 {
			return nil, fmt.Errorf("sources: concat: %s: %w", name(i), ErrEmpty)
		}
		if l.End() > (1<<63-1)-p.Size() {
			return nil, fmt.Errorf("sources: concat: the parts add up to more than 2^63-1 bytes at %s: %w", name(i), syscall.EFBIG)
		}
		l.AddSource(name(i), p, p.Size())
	}
	if firstRO >= 0 && firstRW >= 0 {
		return nil, fmt.Errorf("sources: concat: %s is read-only but %s is writable: %w", name(firstRO), name(firstRW), ErrMixedReadOnly)
	}
	c := &Concat{}
	if opts.Align > 1 {
		end := l.End()
		if end > (1<<63-1)-opts.Align {
			return nil, fmt.Errorf("sources: concat: %d bytes cannot be padded to a multiple of %d: %w", end, opts.Align, syscall.EFBIG)
		}
		c.pad = l.AlignTo(opts.Align) - end
	}
	r, err := NewRegions(l.Regions())
	if err != nil {
		return nil, err
	}
	c.r = r
	return c, nil
}

// Padding returns the number of zero bytes added after the last part.
func (c *Concat) Padding() int64 { return c.pad }

// Regions returns the layout: one region per part, then the padding.
func (c *Concat) Regions() []Region { return c.r.Regions() }

// Size returns the parts' total size plus the padding.
func (c *Concat) Size() int64 { return c.r.Size() }

// Caps returns the parts' combined capabilities (see Regions).
func (c *Concat) Caps() Caps { return c.r.Caps() }

// ReadAt reads across the parts.
func (c *Concat) ReadAt(p []byte, off int64) (int, error) { return c.r.ReadAt(p, off) }

// WriteAt writes across the parts; see Concat about the padding.
func (c *Concat) WriteAt(p []byte, off int64) (int, error) { return c.r.WriteAt(p, off) }

// Flush flushes the parts written since their last flush.
func (c *Concat) Flush() error { return c.r.Flush() }

// Trim trims the range in each part it covers.
func (c *Concat) Trim(off, length int64) error { return c.r.Trim(off, length) }

// Zero zeros the range in each part it covers.
func (c *Concat) Zero(off, length int64, mayTrim bool) error { return c.r.Zero(off, length, mayTrim) }

// Close closes every part. A second Close returns nil.
func (c *Concat) Close() error { return c.r.Close() }

// Extents reports each part's extents, and the padding between parts as
// holes.
func (c *Concat) Extents(off, length int64, fn func(Extent) bool) error {
	return c.r.Extents(off, length, fn)
}
