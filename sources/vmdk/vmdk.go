// Package vmdk serves VMware virtual disks (VMDK) as a sources.Source,
// read-write: `nbdloop attach disk.vmdk`.
//
// Open takes the path of a descriptor (the small text file of a split or
// flat disk, which starts with "# Disk DescriptorFile") or of a hosted
// sparse file (magic KDMV: monolithicSparse, streamOptimized, one extent of
// twoGbMaxExtentSparse) and opens the files it names itself, relative to the
// descriptor's directory. It serves the createTypes monolithicSparse,
// monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized
// and vmfs: extents of type SPARSE (hosted sparse, KDMV), FLAT with an
// offset, VMFS/VMFSRAW/VMFSRDM (flat files or devices) and ZERO, with access
// RW, RDONLY (writes fail with EPERM) or NOACCESS (reads and writes fail
// with EIO).
//
// Sparse extents: grain directory and grain tables (the redundant copies
// are kept in sync on writes), zeroed-grain entries (GTE 1, header flag
// bit 2), and a grain directory at the end (GD_AT_END, found through the
// footer). Writes to grains that are not yet allocated append the whole
// grain at the end of the file (the rest of it copied from the parent, or
// zeros), then update the redundant grain table, then the primary one, so
// that a table never points at a grain whose data is not written yet; a
// grain directory entry of 0 gets new tables the same way, the directories
// last. Trim and Zero turn whole grains into zeroed-grain entries where the
// header allows it (qemu-img create -o zeroed_grain=on), and otherwise
// write zeros (Zero) or do nothing (Trim). Flush is fdatasync of every
// extent file written since the last Flush: durability, including of that order, is promised only at
// Flush, as on a real disk with a write cache.
//
// streamOptimized extents (DEFLATE-compressed grains with markers, as for
// OVF appliances) are read-only: the disk is then served read-only and
// Warnings says so. So are version 3 sparse extents that are not
// compressed and extents with the grain directory at the end (as qemu
// does).
//
// Delta disks (parentFileNameHint, as made by `qemu-img create -f vmdk -b
// base.vmdk`) read unallocated grains through their parent, opened
// read-only; the parent's CID must equal the delta's parentCID, else Open
// fails (the parent changed after the delta was made). Chains are followed
// to a depth of 16; a loop is an error.
//
// Safety with untrusted images: the file the user names is trusted, what it
// names is not. Extents and parents are opened through Options.Named: a name
// must resolve, symbolic links included, beneath the top file's directory
// (or a directory the user allowed), and only to a regular file (or a block
// device where allowed); anything else fails Open with an error naming the
// extent or parent and the flag that would allow it. A disk opened
// read-only opens nothing for writing; parents are always opened
// read-only. Every offset and size read from a file is checked against the
// file before use, with sums and products checked for overflow. Memory kept
// for metadata is charged to Options.Budget, shared by all extents and
// parents, and an image that needs more is refused at Open with the
// figures: per sparse extent, the grain directory for the part of the
// extent the descriptor uses (4 bytes per grain table, twice for a
// writable extent with a redundant directory), one grain table (at most 2
// KiB) and, when compressed, one inflated grain and its compressed bytes
// (at most 3 MiB); the descriptor, twice its size. Further cache slots, up
// to Options.CacheSize, are charged as they are first used and, when the
// budget is spent, not taken (the cache evicts instead). Caps bound the
// descriptor (1 MiB, 4096 extents), the grain directory (2^20 entries),
// the grain (1 MiB) and the grain table (512 entries) whatever the budget.
// Writes never go to a grain that a grain table places inside the
// extent's metadata.
//
// Concurrency: Caps().Parallel is true. Reads, and writes to allocated
// grains, of one extent run in parallel; allocating writes, trims and zeros
// of an extent take its metadata lock exclusively.
//
// Limits: the hosted sparse format only (not the ESX COWD VMFSSPARSE or
// SESPARSE extents, which fail Open with an error); compressed grains are
// never written; sizes are whole sectors. A KDMV file whose header has a
// capacity of 0 (a descriptor wrapped in a sparse header) is refused.
//
// CID: the first modification writes a new random CID into the
// descriptor, as qemu and VMware do, so that a delta disk made from this one
// before no longer opens (its parentCID no longer matches).
//
// Example:
//
//	d, err := vmdk.Open("disk.vmdk", vmdk.Options{})
//	...
//	for _, w := range d.Warnings() { log.Print(w) }
package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/nbdloop/nbdloop/sources"
)

// DefaultCacheSize is the default memory budget for cached grain tables
// and inflated compressed grains.
const DefaultCacheSize = 32 << 20

// maxParents bounds a delta disk's chain of parents.
const maxParents = 16

// Options tune Open. The zero value is the default.
type Options struct {
	// ReadOnly opens every file read-only and refuses every modifying
	// call with sources.ErrReadOnly.
	ReadOnly bool
	// CacheSize bounds the memory of cached grain tables and inflated
	// grains, in bytes (0: DefaultCacheSize), shared out among the extents
	// (half for each); each parent of a delta disk has a quarter of its
	// child's (at least 1 MiB). Every extent keeps at least one grain table
	// (and one inflated grain) whatever the size.
	CacheSize int64
	// Named opens the extents and parents the disk names. Its zero value
	// (Dir empty) confines them beneath the directory of the file given to
	// Open, as sources.Confine does; ReadOnly is set when Options.ReadOnly
	// is, and always for parents.
	Named sources.NamedFiles
	// Budget is charged for the metadata kept in memory, by every extent
	// and parent (nil: sources.NewBudget(0), the default limit). Close
	// gives it back.
	Budget *sources.Budget
}

// ErrStreamReadOnly is returned by modifying calls on a streamOptimized
// (compressed) disk. It wraps sources.ErrReadOnly.
var ErrStreamReadOnly = fmt.Errorf("streamOptimized (compressed) VMDK images are read-only (convert it: qemu-img convert -O vmdk IN OUT, or add --filter cow): %w", sources.ErrReadOnly)

var errExtentReadOnly = fmt.Errorf("extent is read-only: %w", sources.ErrReadOnly)

// Extent kinds.
const (
	kindZero = iota
	kindFlat
	kindSparse
	kindNoAccess
)

// extent is one extent of the disk: bytes [start, end) of the disk.
type extent struct {
	start, end int64
	kind       int
	writable   bool
	name       string
	flat       *sources.File
	sp         *sparse
	// dirty is set, for a writable extent, when a modifying call on it
	// returns; Flush syncs only the extents written since the last one.
	dirty *atomic.Bool
	// parent reads the parent disk at offsets relative to the extent;
	// nil when the disk has none.
	parent func(p []byte, off int64) error
}

// Disk is an open VMDK disk. It implements sources.Source.
type Disk struct {
	path     string
	dir      string // absolute directory of path, where names are relative to
	budget   *sources.Budget
	charged  int64 // charged to budget by the disk itself (the descriptor)
	desc     *Descriptor
	size     int64
	extents  []extent
	parent   *Disk
	caps     sources.Caps
	stream   bool // a compressed extent made the disk read-only
	warnings []string
	closed   atomic.Bool

	// Where the descriptor lives, to give the disk a new CID on its first
	// modification (as qemu and VMware do), so that delta disks made from
	// it before no longer open: descFile is the descriptor file's path, or
	// descSparse the extent that embeds it at descOff, in at most descMax
	// bytes.
	descFile   string
	descSparse *sparse
	descOff    int64
	descMax    int64
	descRaw    []byte
	cidOnce    sync.Once
	cidErr     error
}

// Open opens the VMDK disk at path (a descriptor or a sparse file, told
// apart by their first bytes, whatever the file name).
func Open(path string, opts Options) (*Disk, error) {
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Named.Dir == "" {
		opts.Named.Dir = sources.Confine(path).Dir
	}
	if opts.ReadOnly {
		opts.Named.ReadOnly = true
	}
	if opts.Budget == nil {
		opts.Budget = sources.NewBudget(0)
	}
	if err := checkFileType(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return open(f, path, opts, 0, map[[2]uint64]bool{})
}

// open opens the disk whose file f (read-only, closed by open) is at path:
// the file the user named (depth 0), or a parent.
func open(f *os.File, path string, opts Options, depth int, seen map[[2]uint64]bool) (*Disk, error) {
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id := [2]uint64{st.Dev, st.Ino}
		if seen[id] {
			return nil, fmt.Errorf("%s: the chain of parents loops back to this file", path)
		}
		seen[id] = true
	}
	head := make([]byte, min(fi.Size(), headerSize))
	if _, err := io.ReadFull(f, head); err != nil {
		return nil, fmt.Errorf("%s: reading the first bytes: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	d := &Disk{path: path, dir: filepath.Dir(abs), budget: opts.Budget}
	switch {
	case bytes.HasPrefix(head, magic[:]):
		err = d.openMonolithic(&f, path, opts)
	case IsDescriptor(head):
		err = d.openDescriptor(f, fi.Size(), path, opts)
	case bytes.HasPrefix(head, []byte("COWD")):
		err = fmt.Errorf("%s: ESX COWD sparse extents are not supported (convert it: qemu-img convert -O vmdk IN OUT)", path)
	default:
		err = fmt.Errorf("%s: not a VMDK descriptor or sparse extent", path)
	}
	if err == nil {
		err = d.openParent(opts, depth, seen)
	}
	if err != nil {
		d.Close()
		return nil, err
	}
	d.setCaps(opts)
	return d, nil
}

// checkFileType refuses to open anything but regular files and block
// devices: a descriptor from an untrusted image may name a FIFO or a
// character device, whose open or reads would block or never end.
func checkFileType(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := fi.Mode(); !m.IsRegular() && m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0 {
		return fmt.Errorf("%s: not a regular file or block device (%v)", path, m.Type())
	}
	return nil
}

// IsDescriptor reports whether head, the first bytes of a file, starts a
// VMDK text descriptor.
func IsDescriptor(head []byte) bool {
	head = bytes.TrimLeft(head, " \t\r\n")
	return bytes.HasPrefix(head, []byte(descriptorMagic))
}

// IsSparse reports whether head starts a hosted sparse extent (KDMV).
func IsSparse(head []byte) bool { return bytes.HasPrefix(head, magic[:]) }

// openMonolithic opens the sparse file *f as the disk's only extent,
// whatever its embedded descriptor says the extent file is called (files
// get renamed); the descriptor gives the CIDs and the parent. It takes *f
// over (setting it to nil), or reopens path for writing when the disk is
// writable (path is then the file the user named).
func (d *Disk) openMonolithic(f **os.File, path string, opts Options) error {
	sf := *f
	if !opts.ReadOnly {
		w, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		sf = w
	} else {
		*f = nil
	}
	x, err := d.openSparseExtent(sf, path, !opts.ReadOnly, 0, opts.CacheSize/2, opts.CacheSize/2, opts.Budget)
	if err != nil {
		return err
	}
	x.start, x.end = 0, x.sp.size
	if x.writable {
		x.dirty = new(atomic.Bool)
	}
	d.extents = append(d.extents, x)
	d.size = x.end
	raw, err := x.sp.descriptor()
	if err != nil {
		return err
	}
	if raw != nil {
		if err := d.charge(2*int64(len(raw)), "the embedded descriptor of "+path); err != nil {
			return err
		}
		if d.desc, err = ParseDescriptor(raw); err != nil {
			return fmt.Errorf("%s: embedded %w", path, err)
		}
		d.descSparse, d.descRaw = x.sp, raw
		d.descOff, d.descMax = int64(x.sp.h.descOffset)*sectorSize, int64(len(raw))
	} else {
		d.desc = &Descriptor{ParentCID: NoParent}
	}
	return nil
}

// charge takes n bytes from the budget for the disk itself.
func (d *Disk) charge(n int64, what string) error {
	if err := d.budget.Charge(n, what); err != nil {
		return err
	}
	d.charged += n
	return nil
}

// openSparseExtent serves the sparse extent file f (closed on error) of
// which the disk uses the first need bytes (0: all of it).
func (d *Disk) openSparseExtent(f *os.File, path string, writable bool, need, cacheBudget, streamBudget int64, budget *sources.Budget) (extent, error) {
	sp, err := openSparse(f, path, sparseOptions{
		writable: writable, need: need, cacheBytes: cacheBudget, streamBytes: streamBudget, budget: budget,
	})
	if err != nil {
		f.Close()
		return extent{}, err
	}
	x := extent{kind: kindSparse, name: path, sp: sp, writable: sp.writable}
	switch {
	case sp.compressed:
		d.stream = true
	case sp.h.gdOffset == gdAtEnd:
		if writable {
			d.warnings = append(d.warnings, fmt.Sprintf("%s: grain directory at the end of the file: served read-only", path))
		}
	case sp.h.version == 3:
		if writable {
			d.warnings = append(d.warnings, fmt.Sprintf("%s: version 3 sparse extent that is not compressed: served read-only, as qemu does", path))
		}
	}
	if sp.h.unclean {
		d.warnings = append(d.warnings, fmt.Sprintf("%s: the extent was not closed cleanly (check it: qemu-img check)", path))
	}
	return x, nil
}

// openDescriptor opens the extents a text descriptor lists.
func (d *Disk) openDescriptor(f *os.File, size int64, path string, opts Options) error {
	if size > maxDescriptorSize {
		return fmt.Errorf("%s: descriptor file of %d bytes is larger than %d", path, size, maxDescriptorSize)
	}
	if err := d.charge(2*size, "the descriptor "+path); err != nil {
		return err
	}
	raw := make([]byte, size)
	if _, err := f.ReadAt(raw, 0); err != nil {
		return fmt.Errorf("%s: reading the descriptor: %w", path, err)
	}
	desc, err := ParseDescriptor(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(desc.Extents) == 0 {
		return fmt.Errorf("%s: %w", path, errNoExtents)
	}
	d.desc = desc
	d.descFile, d.descRaw = path, raw
	n := int64(len(desc.Extents))
	var off int64
	for i, ed := range desc.Extents {
		file := ""
		if ed.File != "" {
			file = opts.Named.Resolve(d.dir, ed.File)
		}
		writable := !opts.ReadOnly && ed.Access == "RW"
		length := ed.Sectors * sectorSize
		var x extent
		switch {
		case ed.Access == "NOACCESS":
			x = extent{kind: kindNoAccess, name: file}
		case ed.Type == "ZERO":
			x = extent{kind: kindZero, name: fmt.Sprintf("ZERO extent %d", i+1)}
		case ed.Type == "FLAT" || ed.Type == "VMFS" || ed.Type == "VMFSRAW" || ed.Type == "VMFSRDM":
			osf, abs, err := opts.Named.Open(d.dir, ed.File, writable)
			if err != nil {
				return fmt.Errorf("%s: extent %d (%s %s): %w", path, i+1, ed.Access, ed.Type, err)
			}
			file = abs
			if err := d.charge(extentOverhead, "extent "+file); err != nil {
				osf.Close()
				return err
			}
			fl, err := sources.NewFile(osf, file, sources.FileOptions{ReadOnly: !writable, Offset: ed.Offset * sectorSize, SizeLimit: length})
			if err != nil {
				return fmt.Errorf("%s: extent %d: %w", path, i+1, err)
			}
			x = extent{kind: kindFlat, name: file, flat: fl, writable: writable}
			if fl.Size() < length {
				d.extents = append(d.extents, x) // closed by Close
				return fmt.Errorf("%s: extent %d: %s holds %d bytes after offset %d, the extent needs %d", path, i+1, file, fl.Size(), ed.Offset*sectorSize, length)
			}
		case ed.Type == "SPARSE":
			osf, abs, err := opts.Named.Open(d.dir, ed.File, writable)
			if err != nil {
				return fmt.Errorf("%s: extent %d (%s %s): %w", path, i+1, ed.Access, ed.Type, err)
			}
			file = abs
			x, err = d.openSparseExtent(osf, file, writable, length, opts.CacheSize/2/n, opts.CacheSize/2/n, opts.Budget)
			if err != nil {
				return fmt.Errorf("%s: extent %d: %w", path, i+1, err)
			}
			if x.sp.size < length {
				d.extents = append(d.extents, x)
				return fmt.Errorf("%s: extent %d: %s has a capacity of %d sectors, the descriptor gives it %d", path, i+1, file, x.sp.h.capacity, ed.Sectors)
			}
		default:
			return fmt.Errorf("%s: extent %d: %s extents are not supported (convert the disk: qemu-img convert -O vmdk IN OUT)", path, i+1, ed.Type)
		}
		if ed.Access == "RDONLY" && !opts.ReadOnly {
			d.warnings = append(d.warnings, fmt.Sprintf("extent %d (%s) is RDONLY: writes to bytes %d to %d fail", i+1, x.name, off, off+length-1))
		}
		if ed.Access == "NOACCESS" {
			d.warnings = append(d.warnings, fmt.Sprintf("extent %d (%s) is NOACCESS: bytes %d to %d cannot be read or written", i+1, x.name, off, off+length-1))
		}
		x.start, x.end = off, off+length
		if x.writable {
			x.dirty = new(atomic.Bool)
		}
		d.extents = append(d.extents, x)
		off += length
	}
	d.size = off
	return nil
}

// openParent opens the parent of a delta disk and checks its CID.
func (d *Disk) openParent(opts Options, depth int, seen map[[2]uint64]bool) error {
	hint := d.desc.ParentFileNameHint
	if hint == "" {
		return nil
	}
	if depth+1 > maxParents {
		return fmt.Errorf("%s: more than %d parents in the chain", d.path, maxParents)
	}
	// Parents are read only where the delta has no grain: they get a
	// quarter of its cache, so a chain's caches add up to a bounded total.
	popts := opts
	popts.ReadOnly = true
	popts.Named.ReadOnly = true
	popts.CacheSize = max(opts.CacheSize/4, 1<<20)
	pf, ppath, err := popts.Named.Open(d.dir, hint, false)
	if err != nil {
		return fmt.Errorf("%s: opening the parent (parentFileNameHint): %w", d.path, err)
	}
	p, err := open(pf, ppath, popts, depth+1, seen)
	if err != nil {
		return fmt.Errorf("%s: opening the parent: %w", d.path, err)
	}
	d.parent = p
	if p.desc.CID != d.desc.ParentCID {
		return fmt.Errorf("%s: parent %s has CID %08x, the delta expects parentCID %08x: the parent changed after the delta was made", d.path, ppath, p.desc.CID, d.desc.ParentCID)
	}
	for i := range d.extents {
		x := &d.extents[i]
		if x.kind == kindSparse {
			start := x.start
			x.parent = func(b []byte, off int64) error { return d.readParent(b, start+off) }
		}
	}
	return nil
}

// readParent reads the parent at off: zeros past its end.
func (d *Disk) readParent(p []byte, off int64) error {
	n := int64(0)
	if off < d.parent.size {
		n = min(int64(len(p)), d.parent.size-off)
		if err := d.parent.readAt(p[:n], off); err != nil {
			return err
		}
	}
	clear(p[n:])
	return nil
}

func (d *Disk) setCaps(opts Options) {
	writable := false
	for _, x := range d.extents {
		writable = writable || x.writable
	}
	if d.stream && !opts.ReadOnly {
		d.warnings = append(d.warnings, "streamOptimized (compressed) image: served read-only (add --filter cow for a writable overlay)")
	}
	ro := opts.ReadOnly || !writable || d.stream
	d.caps = sources.Caps{ReadOnly: ro, Flush: !ro, Zero: !ro, Parallel: true}
}

// Warnings lists what the user should know about the open disk, one line
// each: extents served read-only or not at all, unclean shutdowns.
func (d *Disk) Warnings() []string { return d.warnings }

// Size is the disk size: the sum of its extents.
func (d *Disk) Size() int64 { return d.size }

// Caps: Parallel; read-only when opened so, when no extent is writable or
// when the disk is compressed; otherwise Flush and Zero.
func (d *Disk) Caps() sources.Caps { return d.caps }

var errClosed = fmt.Errorf("vmdk: disk is closed: %w", syscall.EBADF)

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

// newCID writes a new random CID into the descriptor: the CID identifies
// the disk's contents, and delta disks record their parent's in parentCID.
// A descriptor without a CID line, or an embedded one with no room left,
// is left alone.
func (d *Disk) newCID() error {
	raw := d.descRaw
	if i := bytes.IndexByte(raw, 0); i >= 0 {
		raw = raw[:i]
	}
	if raw == nil {
		return nil
	}
	cid := d.desc.CID
	for cid == d.desc.CID || cid == NoParent {
		cid = rand.Uint32()
	}
	var out []byte
	at := 0
	for l := range strings.Lines(string(raw)) {
		if k, _, ok := strings.Cut(strings.TrimSpace(l), "="); ok && strings.TrimSpace(k) == "CID" {
			eol := l[len(strings.TrimRight(l, "\r\n")):]
			out = fmt.Appendf(append([]byte(nil), raw[:at]...), "CID=%08x%s", cid, eol)
			out = append(out, raw[at+len(l):]...)
			break
		}
		at += len(l)
	}
	if out == nil {
		return nil
	}
	switch {
	case d.descSparse != nil:
		if int64(len(out)) > d.descMax {
			return nil
		}
		buf := make([]byte, max(len(out), len(raw)))
		copy(buf, out)
		if _, err := d.descSparse.f.WriteAt(buf, d.descOff); err != nil {
			return fmt.Errorf("%s: writing the new CID into the descriptor: %w", d.path, err)
		}
	default:
		f, err := os.OpenFile(d.descFile, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("writing the new CID into the descriptor: %w", err)
		}
		defer f.Close()
		if _, err := f.WriteAt(out, 0); err != nil {
			return fmt.Errorf("writing the new CID into the descriptor: %w", err)
		}
		if err := f.Truncate(int64(len(out))); err != nil {
			return fmt.Errorf("writing the new CID into the descriptor: %w", err)
		}
	}
	d.desc.CID = cid
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

// Close flushes and closes every file, the parents' too. A second Close
// returns nil.
func (d *Disk) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	var errs []error
	for i := range d.extents {
		x := &d.extents[i]
		errs = append(errs, x.flush())
		switch x.kind {
		case kindFlat:
			errs = append(errs, x.flat.Close())
		case kindSparse:
			errs = append(errs, x.sp.close())
		}
	}
	d.budget.Release(d.charged)
	d.charged = 0
	if d.parent != nil {
		errs = append(errs, d.parent.Close())
	}
	return errors.Join(errs...)
}
