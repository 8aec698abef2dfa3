package vmdk

import (
	"fmt"
	"os"
	"sync/atomic"

	"github.com/nbdloop/nbdloop/sources"
)

// openMonolithic opens the sparse file *f as the disk's only extent,
// whatever its embedded descriptor says the extent file is called (files
// get renamed); the descriptor gives the CIDs and the parent. It takes *f
// over (setting it to nil), or reopens path for writing when the disk is
// writable (path is then the file the user named).
func (d *Disk) openMonolithic(f *file, size int64, path string, opts Options) error {
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
	x, err := d.openSparseExtent(sf, size, path, !opts.ReadOnly, 0, opts.CacheSize/2, opts.CacheSize/2, opts.Budget)
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

// openSparseExtent serves the sparse extent file f (of size bytes, closed
// on error) of which the disk uses the first need bytes (0: all of it).
func (d *Disk) openSparseExtent(f file, size int64, path string, writable bool, need, cacheBudget, streamBudget int64, budget *sources.Budget) (extent, error) {
	sp, err := openSparse(f, size, path, sparseOptions{
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
func (d *Disk) openDescriptor(f file, size int64, path string, opts Options) error {
	raw, desc, err := d.readDescriptor(f, size, path)
	if err != nil {
		return err
	}
	d.desc = desc
	d.descFile, d.descRaw = path, raw
	n := int64(len(desc.Extents))
	var off int64
	for i, ed := range desc.Extents {
		x, err := d.openExtent(path, i, ed, opts, n)
		if err != nil {
			return err
		}
		length := ed.Sectors * sectorSize
		d.warnAccess(i, ed, x.name, off, length, opts.ReadOnly)
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

// readDescriptor reads and parses the descriptor file f of size bytes at
// path, charging the budget for it. A descriptor without extents is an
// error.
func (d *Disk) readDescriptor(f file, size int64, path string) ([]byte, *Descriptor, error) {
	if size > maxDescriptorSize {
		return nil, nil, fmt.Errorf("%s: descriptor file of %d bytes is larger than %d", path, size, maxDescriptorSize)
	}
	if err := d.charge(2*size, "the descriptor "+path); err != nil {
		return nil, nil, err
	}
	raw := make([]byte, size)
	if _, err := f.ReadAt(raw, 0); err != nil {
		return nil, nil, fmt.Errorf("%s: reading the descriptor: %w", path, err)
	}
	desc, err := ParseDescriptor(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(desc.Extents) == 0 {
		return nil, nil, fmt.Errorf("%s: %w", path, errNoExtents)
	}
	return raw, desc, nil
}

// openExtent opens extent i, described by ed, of the descriptor at path,
// which lists n extents (they share the cache). The extent's position in
// the disk is the caller's to set. An extent file that opens but is too
// short for ed is added to d.extents, for Close, and the error returned.
func (d *Disk) openExtent(path string, i int, ed ExtentDesc, opts Options, n int64) (extent, error) {
	writable := !opts.ReadOnly && ed.Access == "RW"
	switch {
	case ed.Access == "NOACCESS":
		file := ""
		if ed.File != "" {
			file = d.files.resolve(d.base, ed.File)
		}
		return extent{kind: kindNoAccess, name: file}, nil
	case ed.Type == "ZERO":
		return extent{kind: kindZero, name: fmt.Sprintf("ZERO extent %d", i+1)}, nil
	case ed.Type == "FLAT" || ed.Type == "VMFS" || ed.Type == "VMFSRAW" || ed.Type == "VMFSRDM":
		return d.openFlatExtent(path, i, ed, writable, opts)
	case ed.Type == "SPARSE":
		return d.openListedSparseExtent(path, i, ed, writable, opts, n)
	}
	return extent{}, fmt.Errorf("%s: extent %d: %s extents are not supported (convert the disk: qemu-img convert -O vmdk IN OUT)", path, i+1, ed.Type)
}

// openFlatExtent opens the flat extent i, described by ed, of the
// descriptor at path (see openExtent).
func (d *Disk) openFlatExtent(path string, i int, ed ExtentDesc, writable bool, opts Options) (extent, error) {
	length := ed.Sectors * sectorSize
	f, _, file, err := d.files.open(d.base, ed.File, writable)
	if err != nil {
		return extent{}, fmt.Errorf("%s: extent %d (%s %s): %w", path, i+1, ed.Access, ed.Type, err)
	}
	if err := d.charge(extentOverhead, "extent "+file); err != nil {
		f.Close()
		return extent{}, err
	}
	fl, err := d.files.flat(f, file, writable, ed.Offset*sectorSize, length)
	if err != nil {
		return extent{}, fmt.Errorf("%s: extent %d: %w", path, i+1, err)
	}
	x := extent{kind: kindFlat, name: file, flat: fl, writable: writable}
	if fl.Size() < length {
		d.extents = append(d.extents, x) // closed by Close
		return extent{}, fmt.Errorf("%s: extent %d: %s holds %d bytes after offset %d, the extent needs %d", path, i+1, file, fl.Size(), ed.Offset*sectorSize, length)
	}
	return x, nil
}

// openListedSparseExtent opens the sparse extent i, described by ed, of
// the descriptor at path, which lists n extents (see openExtent).
func (d *Disk) openListedSparseExtent(path string, i int, ed ExtentDesc, writable bool, opts Options, n int64) (extent, error) {
	length := ed.Sectors * sectorSize
	f, size, file, err := d.files.open(d.base, ed.File, writable)
	if err != nil {
		return extent{}, fmt.Errorf("%s: extent %d (%s %s): %w", path, i+1, ed.Access, ed.Type, err)
	}
	x, err := d.openSparseExtent(f, size, file, writable, length, opts.CacheSize/2/n, opts.CacheSize/2/n, opts.Budget)
	if err != nil {
		return extent{}, fmt.Errorf("%s: extent %d: %w", path, i+1, err)
	}
	if x.sp.size < length {
		d.extents = append(d.extents, x) // closed by Close
		return extent{}, fmt.Errorf("%s: extent %d: %s has a capacity of %d sectors, the descriptor gives it %d", path, i+1, file, x.sp.h.capacity, ed.Sectors)
	}
	return x, nil
}

// warnAccess warns about extent i, described by ed, named name, which
// holds bytes [off, off+length) of the disk, when it is RDONLY in a disk
// opened for writing, or NOACCESS.
func (d *Disk) warnAccess(i int, ed ExtentDesc, name string, off, length int64, readOnly bool) {
	if ed.Access == "RDONLY" && !readOnly {
		d.warnings = append(d.warnings, fmt.Sprintf("extent %d (%s) is RDONLY: writes to bytes %d to %d fail", i+1, name, off, off+length-1))
	}
	if ed.Access == "NOACCESS" {
		d.warnings = append(d.warnings, fmt.Sprintf("extent %d (%s) is NOACCESS: bytes %d to %d cannot be read or written", i+1, name, off, off+length-1))
	}
}
