package filters

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"

	"github.com/nbdloop/nbdloop/sources"
)

var cowDef = &Def{
	Name:           "cow",
	Summary:        "make any source writable without changing it (copy-on-write)",
	isolates:       true,
	diesWithServer: "the cow filter's overlay lives in the server process and died with it",
	Doc: "Writes go to an overlay, kept in memory or in a sparse file; reads come from the " +
		"overlay where it has been written and from the source elsewhere. This is how a " +
		"compressed image, a qcow2 snapshot or a file you must not touch becomes a writable " +
		"disk. Trims and zeroes are recorded in the overlay: the range reads as zeros " +
		"afterwards and the source stays as it was. The source is opened read-only. The " +
		"overlay is dropped at detach, unless file= and keep=true: then the file holds the " +
		"written blocks and their map, and attaching the same source with the same spec " +
		"again continues from it. Limits: the map of written blocks is kept in memory, one " +
		"bit per block (32 MiB per TiB at 4 KiB blocks, at most 256 MiB: use a larger " +
		"block-size for larger sources). Example: --filter cow:file=/var/tmp/overlay,keep=true",
	Options: []Option{
		{Key: "file", Value: "PATH", kind: pathKind,
			Help: "keep the overlay in this sparse file instead of in memory; it must not exist unless keep=true"},
		{Key: "keep", Value: "BOOL", Default: "false", kind: boolKind,
			Help: "keep the overlay file after detach, and continue from it if it exists at attach"},
		{Key: "block-size", Value: "BYTES", Default: "4K", kind: blockSizeKind,
			Help: "size of the blocks copied to the overlay: a power of two from 512 to 1M"},
	},
	check: func(a args) error {
		if a.bool("keep") && !a.has("file") {
			return errors.New("keep=true needs file=PATH (an overlay in memory cannot be kept)")
		}
		return nil
	},
	open: func(next sources.Source, a args, env Env) (sources.Source, error) {
		return NewCow(next, CowOptions{File: a.str("file"), Keep: a.bool("keep"), BlockSize: a.int64("block-size")})
	},
}

// CowOptions configure a Cow filter; see the cow entry of Help.
type CowOptions struct {
	File      string // overlay file; "" keeps the overlay in memory
	Keep      bool   // keep File after Close, and reuse it at open
	BlockSize int64  // 4096 when 0
}

// maxCowMap bounds the memory of the map of written blocks.
const maxCowMap = 256 << 20

// Cow serves next with every modification redirected to an overlay, block
// by block: a block that has been written, trimmed or zeroed is read from
// the overlay, every other block from next, which is never written to (it
// may be read-only). A partial write to a block not yet in the overlay
// copies the block from next first, under a lock striped by block number,
// so that concurrent writes to one block are never mixed with a copy of
// old data. Reads take no lock: a block's bit is set only once its data is
// in the overlay.
//
// The overlay is a Memory source, or a sparse file laid out as: the
// device's bytes at their own offsets, padded to 4 KiB, then the map (one
// bit per block, little-endian 64-bit words), then a 32-byte trailer
// ("nbdlcow1", block size, size, block count; little-endian). Flush and
// Close write the map and the trailer, so with Keep a file reopened over
// the same next continues where it stopped, as of the last flush.
//
// Caps: writable; Trim and Zero (recorded in the overlay); Flush only for
// a kept file overlay (nothing else outlives the process); Parallel when
// next and the overlay are; Rotational as next.
//
// Limits: the map lives in memory, one bit per block, at most 256 MiB
// (8 TiB at 4 KiB blocks). Nothing checks that next is unchanged between
// two runs with a kept overlay. Trim records only the whole blocks it
// covers (the contract lets the rest read back unchanged).
type Cow struct {
	next    sources.Source
	overlay sources.Source
	caps    sources.Caps
	size    int64
	shift   uint // log2 of the block size
	nblocks int64
	bits    []atomic.Uint64
	locks   [64]sync.Mutex
	bufs    sync.Pool
	relay   sources.ExtentRelay // passes next's and the overlay's extents on

	file   *os.File // the overlay file, for the map; nil in memory
	path   string
	keep   bool
	mapOff int64
	closed atomic.Bool
}

const cowMagic = "nbdlcow1"

// NewCow wraps next. Closing the filter closes next and removes the
// overlay file unless Keep.
func NewCow(next sources.Source, opts CowOptions) (*Cow, error) {
	bs := opts.BlockSize
	if bs == 0 {
		bs = 4096
	}
	if bs < 512 || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("cow filter: block-size %d is not a power of two from 512", bs)
	}
	size := next.Size()
	c := &Cow{
		next:  next,
		size:  size,
		shift: uint(bits.TrailingZeros64(uint64(bs))),
		path:  opts.File,
		keep:  opts.Keep,
	}
	c.nblocks = (size-1)>>c.shift + 1
	words := (c.nblocks + 63) / 64
	if words*8 > maxCowMap {
		need := int64(1) << bits.Len64(uint64((size-1)/(maxCowMap*8)))
		return nil, fmt.Errorf("cow filter: the map of %d blocks would take %d MiB (use block-size=%d or more)",
			c.nblocks, words*8>>20, max(need, 2*bs))
	}
	c.bits = make([]atomic.Uint64, words)
	c.bufs.New = func() any { b := make([]byte, bs); return &b }
	if opts.File == "" {
		m, err := sources.NewMemory(size)
		if err != nil {
			return nil, fmt.Errorf("cow filter: %w", err)
		}
		c.overlay = m
	} else if err := c.openFile(words); err != nil {
		return nil, err
	}
	nc, oc := next.Caps(), c.overlay.Caps()
	c.caps = sources.Caps{
		ReadOnly:   false,
		Flush:      c.keep,
		Trim:       true,
		Zero:       true,
		Parallel:   nc.Parallel && oc.Parallel,
		Rotational: nc.Rotational,
	}
	return c, nil
}

// openFile creates the overlay file, or with keep reopens it.
func (c *Cow) openFile(words int64) error {
	c.mapOff = (c.size + 4095) &^ 4095
	total := c.mapOff + words*8 + 32
	f, err := os.OpenFile(c.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	created := err == nil
	if errors.Is(err, fs.ErrExist) {
		if !c.keep {
			return fmt.Errorf("cow filter: overlay file %s exists (remove it, or add keep=true to continue from it)", c.path)
		}
		f, err = os.OpenFile(c.path, os.O_RDWR, 0)
	}
	if err != nil {
		return fmt.Errorf("cow filter: overlay file: %w", err)
	}
	fail := func(err error) error {
		f.Close()
		if created {
			os.Remove(c.path)
		}
		return err
	}
	if created {
		if err := f.Truncate(total); err != nil {
			return fail(fmt.Errorf("cow filter: overlay file: %w", err))
		}
	} else if err := c.loadMap(f, total); err != nil {
		return fail(err)
	}
	c.file = f
	ov, err := sources.OpenFile(c.path, sources.FileOptions{SizeLimit: c.size})
	if err != nil {
		c.file = nil
		return fail(fmt.Errorf("cow filter: overlay file: %w", err))
	}
	c.overlay = ov
	if created {
		// An empty map and a trailer make the file reusable even if the
		// server dies before its first flush.
		if err := c.saveMap(); err != nil {
			ov.Close()
			c.file = nil
			return fail(err)
		}
	}
	return nil
}

func (c *Cow) trailer() []byte {
	t := make([]byte, 32)
	copy(t, cowMagic)
	binary.LittleEndian.PutUint64(t[8:], uint64(1)<<c.shift)
	binary.LittleEndian.PutUint64(t[16:], uint64(c.size))
	binary.LittleEndian.PutUint64(t[24:], uint64(c.nblocks))
	return t
}

// loadMap checks a kept overlay file's trailer and reads its map.
func (c *Cow) loadMap(f *os.File, total int64) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cow filter: overlay file: %w", err)
	}
	want := c.trailer()
	got := make([]byte, 32)
	if st.Size() >= 32 {
		_, err = f.ReadAt(got, st.Size()-32)
	}
	if err != nil || string(got[:8]) != cowMagic {
		return fmt.Errorf("cow filter: %s is not an overlay of a %d-byte source with %d-byte blocks (remove it, or give another file)",
			c.path, c.size, int64(1)<<c.shift)
	}
	if string(got) != string(want) {
		return fmt.Errorf("cow filter: %s is an overlay of a %d-byte source with %d-byte blocks, not of this %d-byte source with %d-byte blocks (remove it, or give another file)",
			c.path, binary.LittleEndian.Uint64(got[16:]), binary.LittleEndian.Uint64(got[8:]), c.size, int64(1)<<c.shift)
	}
	if st.Size() != total {
		return fmt.Errorf("cow filter: %s is %d bytes, want %d: not a complete overlay (remove it, or give another file)", c.path, st.Size(), total)
	}
	buf := make([]byte, len(c.bits)*8)
	if _, err := f.ReadAt(buf, c.mapOff); err != nil {
		return fmt.Errorf("cow filter: reading the map of %s: %w", c.path, err)
	}
	for i := range c.bits {
		c.bits[i].Store(binary.LittleEndian.Uint64(buf[i*8:]))
	}
	return nil
}

// saveMap writes the map and the trailer to the overlay file.
func (c *Cow) saveMap() error {
	buf := make([]byte, len(c.bits)*8+32)
	for i := range c.bits {
		binary.LittleEndian.PutUint64(buf[i*8:], c.bits[i].Load())
	}
	copy(buf[len(c.bits)*8:], c.trailer())
	if _, err := c.file.WriteAt(buf, c.mapOff); err != nil {
		return fmt.Errorf("cow filter: writing the map of %s: %w", c.path, err)
	}
	return nil
}

func (c *Cow) isSet(b int64) bool { return c.bits[b>>6].Load()&(1<<(b&63)) != 0 }
func (c *Cow) set(b int64)        { c.bits[b>>6].Or(1 << (b & 63)) }
func (c *Cow) lock(b int64) *sync.Mutex {
	return &c.locks[b%int64(len(c.locks))]
}

// blockRange returns the bytes of block b: [start, end).
func (c *Cow) blockRange(b int64) (int64, int64) {
	start := b << c.shift
	return start, min(c.size, start+int64(1)<<c.shift)
}

func (c *Cow) check(off, length int64) error {
	if c.closed.Load() {
		return fmt.Errorf("filters: cow filter: %w", os.ErrClosed)
	}
	return sources.CheckRange(off, length, c.size)
}

// Size returns next's size.
func (c *Cow) Size() int64 { return c.size }

// Caps reports a writable source with Trim and Zero; see Cow.
func (c *Cow) Caps() sources.Caps { return c.caps }

// ReadAt reads each run of blocks from the overlay or from next.
func (c *Cow) ReadAt(p []byte, off int64) (int, error) {
	if err := c.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		b := off >> c.shift
		inOverlay := c.isSet(b)
		_, end := c.blockRange(b)
		// Extend the run while the blocks stay on the same side.
		for end-off < int64(len(p)-done) && c.isSet(end>>c.shift) == inOverlay {
			_, end = c.blockRange(end >> c.shift)
		}
		n := int(min(end-off, int64(len(p)-done)))
		src := c.next
		if inOverlay {
			src = c.overlay
		}
		if _, err := src.ReadAt(p[done:done+n], off); err != nil {
			return done, err
		}
		done += n
		off += int64(n)
	}
	return done, nil
}

// WriteAt writes to the overlay, copying partly written blocks from next
// first.
func (c *Cow) WriteAt(p []byte, off int64) (int, error) {
	if err := c.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		b := off >> c.shift
		_, end := c.blockRange(b)
		n := int(min(end-off, int64(len(p)-done)))
		if err := c.modify(b, off, p[done:done+n], false); err != nil {
			return done, err
		}
		done += n
		off += int64(n)
	}
	return done, nil
}

// modify changes [off, off+len(data)) inside block b in the overlay: it
// writes data, or zeros when zero is set (then data only gives the
// length). A block not in the overlay yet is completed from next first.
func (c *Cow) modify(b, off int64, data []byte, zero bool) error {
	apply := func() error {
		if zero {
			return c.overlay.Zero(off, int64(len(data)), true)
		}
		_, err := c.overlay.WriteAt(data, off)
		return err
	}
	if c.isSet(b) {
		return apply()
	}
	mu := c.lock(b)
	mu.Lock()
	defer mu.Unlock()
	if c.isSet(b) {
		return apply()
	}
	start, end := c.blockRange(b)
	if off == start && off+int64(len(data)) == end {
		if err := apply(); err != nil {
			return err
		}
	} else {
		bp := c.bufs.Get().(*[]byte)
		defer c.bufs.Put(bp)
		blk := (*bp)[:end-start]
		if _, err := c.next.ReadAt(blk, start); err != nil {
			return err
		}
		if zero {
			clear(blk[off-start : off-start+int64(len(data))])
		} else {
			copy(blk[off-start:], data)
		}
		if _, err := c.overlay.WriteAt(blk, start); err != nil {
			return err
		}
	}
	c.set(b)
	return nil
}

// Zero makes the range read as zeros, in the overlay.
func (c *Cow) Zero(off, length int64, mayTrim bool) error {
	if err := c.check(off, length); err != nil {
		return err
	}
	end := off + length
	for off < end {
		b := off >> c.shift
		start, bend := c.blockRange(b)
		// Whole blocks already in the overlay are zeroed in one call.
		if off == start && c.isSet(b) {
			run := bend
			for run < end && c.isSet(run>>c.shift) {
				_, e := c.blockRange(run >> c.shift)
				if e > end {
					break
				}
				run = e
			}
			if run <= end {
				if err := c.overlay.Zero(off, run-off, mayTrim); err != nil {
					return err
				}
				off = run
				continue
			}
		}
		n := min(bend, end) - off
		if err := c.modify(b, off, zeros[:n], true); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// zeros gives modify a length for zeroing; it is never written to.
var zeros [1 << 20]byte

// Trim zeros the whole blocks the range covers, in the overlay.
func (c *Cow) Trim(off, length int64) error {
	if err := c.check(off, length); err != nil {
		return err
	}
	bs := int64(1) << c.shift
	first := (off + bs - 1) &^ (bs - 1)
	last := (off + length) &^ (bs - 1)
	if off+length == c.size {
		last = c.size // the last block may be short
	}
	if first >= last {
		return nil
	}
	return c.Zero(first, last-first, true)
}

// Flush flushes the overlay and, for a kept file, writes its map.
func (c *Cow) Flush() error {
	if c.closed.Load() {
		return fmt.Errorf("filters: cow filter: %w", os.ErrClosed)
	}
	if err := c.overlay.Flush(); err != nil {
		return err
	}
	if c.file != nil && c.keep {
		if err := c.saveMap(); err != nil {
			return err
		}
		return c.file.Sync()
	}
	return nil
}

// Close drops the overlay (or keeps its file, with its map) and closes next.
func (c *Cow) Close() error { return closeChain(c, c.next) }

func (c *Cow) release() error {
	if c.closed.Swap(true) {
		return nil
	}
	var errs []error
	if c.file != nil && c.keep {
		errs = append(errs, c.saveMap(), c.file.Sync())
	}
	errs = append(errs, c.overlay.Close())
	if c.file != nil {
		errs = append(errs, c.file.Close())
		if !c.keep {
			errs = append(errs, os.Remove(c.path))
		}
	}
	return errors.Join(errs...)
}

// Extents reports the blocks written through the filter as the overlay
// reports them (data, or the holes a zeroed block left) and the others
// as next reports them.
func (c *Cow) Extents(off, length int64, fn func(sources.Extent) bool) error {
	if err := c.check(off, length); err != nil {
		return err
	}
	end := off + length
	for off < end {
		b := off >> c.shift
		inOverlay := c.isSet(b)
		_, runEnd := c.blockRange(b)
		for runEnd < end && c.isSet(runEnd>>c.shift) == inOverlay {
			_, runEnd = c.blockRange(runEnd >> c.shift)
		}
		runEnd = min(runEnd, end)
		src := c.next
		if inOverlay {
			src = c.overlay
		}
		if more, err := c.relay.Extents(src, 0, off, runEnd-off, fn); err != nil || !more {
			return err
		}
		off = runEnd
	}
	return nil
}
