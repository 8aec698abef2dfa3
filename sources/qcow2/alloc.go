package qcow2

import (
	"fmt"
	"syscall"
)

// isReserved reports whether host cluster c is being allocated
// (im.reserved), so not to be chosen for a refcount block or table.
func (im *Image) isReserved(c int64) bool {
	for _, r := range im.reserved {
		if c >= r.off && c < r.off+r.n {
			return true
		}
	}
	return false
}

// findFree returns the first cluster of a run of n free clusters at or
// after im.freeHint, none reserved.
func (im *Image) findFree(n int64) (int64, error) {
	run := int64(0)
	for c := im.freeHint; ; c++ {
		if c*im.cs >= maxHostOffset {
			return 0, fmt.Errorf("image file full: %w", syscall.ENOSPC)
		}
		var rc uint64
		if c < im.endCluster {
			var err error
			if rc, err = im.refcount(c); err != nil {
				return 0, err
			}
		}
		if rc != 0 || im.isReserved(c) {
			run = 0
			continue
		}
		if run++; run == n {
			return c - n + 1, nil
		}
	}
}

// allocCluster finds a free host cluster, sets its refcount to 1 and
// returns its offset.
func (im *Image) allocCluster() (int64, error) {
	c, _, err := im.allocRun(1)
	return c * im.cs, err
}

// allocRun allocates a run of up to n host-contiguous free clusters, the
// first free one on: it sets their refcounts to 1 and returns the first
// cluster and the run's length. The
// run stops before a cluster that is in use, reserved, or covered by no
// refcount block yet (the next call makes that block, which then lies
// just before the data it counts, as qemu places it).
func (im *Image) allocRun(n int64) (start, got int64, err error) {
	for {
		if start, err = im.findFree(1); err != nil {
			return 0, 0, err
		}
		if im.hasRefBlock(start) {
			break
		}
		// Make the block now: it may take start itself.
		if _, _, err := im.refBlock(start, true); err != nil {
			return 0, 0, err
		}
		if !im.hasRefBlock(start) {
			return 0, 0, fmt.Errorf("no refcount block covers cluster %d: %w", start, ErrCorrupt)
		}
	}
	got = 1
	for ; got < n; got++ {
		c := start + got
		if (c+1)*im.cs > maxHostOffset || im.isReserved(c) || !im.hasRefBlock(c) {
			break
		}
		if c < im.endCluster {
			rc, err := im.refcount(c)
			if err != nil {
				return 0, 0, err
			}
			if rc != 0 {
				break
			}
		}
	}
	if err := im.setRefcounts(start, got, 1); err != nil {
		return 0, 0, err
	}
	im.freeHint = start + got
	im.endCluster = max(im.endCluster, start+got)
	return start, got, nil
}
