package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
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

var errClosed = fmt.Errorf("vmdk: disk is closed: %w", syscall.EBADF)

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
	flat       sources.Source
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
	path    string
	base    string // where names are relative to: path's absolute directory, or the location (OpenSource)
	files   opener
	budget  *sources.Budget
	charged int64 // charged to budget by the disk itself (the descriptor)
	desc    *Descriptor
	size    int64
	extents []extent
	parent  *Disk
	// relay reports the extents of flat extents that are not files.
	relay    sources.ExtentRelay
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
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return open(f, fi.Size(), path, pathFiles{opts.Named}, opts, 0, map[string]bool{})
}

// open opens the disk whose file f (read-only, of size bytes, closed by
// open) is at path: the file the user named (depth 0), or a parent. fs
// opens what it names; seen holds the ids (opener.id) of the files of the
// chain so far.
func open(f file, size int64, path string, fs opener, opts Options, depth int, seen map[string]bool) (*Disk, error) {
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	id, err := fs.id(f, path)
	if err != nil {
		return nil, err
	}
	if seen[id] {
		return nil, fmt.Errorf("%s: the chain of parents loops back to this file", path)
	}
	seen[id] = true
	head := make([]byte, min(size, headerSize))
	if n, err := f.ReadAt(head, 0); n < len(head) {
		return nil, fmt.Errorf("%s: reading the first bytes: %w", path, noEOF(err))
	}
	base, err := fs.place(path)
	if err != nil {
		return nil, err
	}
	d := &Disk{path: path, base: base, files: fs, budget: opts.Budget}
	switch {
	case bytes.HasPrefix(head, magic[:]):
		err = d.openMonolithic(&f, size, path, opts)
	case IsDescriptor(head):
		err = d.openDescriptor(f, size, path, opts)
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

// charge takes n bytes from the budget for the disk itself.
func (d *Disk) charge(n int64, what string) error {
	if err := d.budget.Charge(n, what); err != nil {
		return err
	}
	d.charged += n
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
