package vmdk

import "fmt"

// openParent opens the parent of a delta disk and checks its CID.
func (d *Disk) openParent(opts Options, depth int, seen map[string]bool) error {
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
	pfs := d.files.readOnly()
	pf, psize, ppath, err := pfs.open(d.base, hint, false)
	if err != nil {
		return fmt.Errorf("%s: opening the parent (parentFileNameHint): %w", d.path, err)
	}
	p, err := open(pf, psize, ppath, pfs, popts, depth+1, seen)
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
