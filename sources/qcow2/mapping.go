package qcow2

import (
	"encoding/binary"
	"fmt"
)

// l2ForWrite returns the L2 table of guest cluster ci and the byte offset
// of its entry, allocating the table if the L1 entry is empty. The caller
// holds im.meta exclusively.
func (im *Image) l2ForWrite(ci int64) (*table, int64, error) {
	l1i := ci >> im.l2bits
	if l1i >= int64(len(im.l1)) {
		return nil, 0, fmt.Errorf("cluster %d is past the L1 table: %w", ci, ErrCorrupt)
	}
	i := (ci & (1<<im.l2bits - 1)) * im.h.l2EntryBytes
	l1e := im.l1[l1i]
	if off := int64(l1e & offsetMask); off != 0 {
		if !im.inFile(off) {
			return nil, 0, fmt.Errorf("L2 table at %#x lies past the end of the file: %w", off, ErrCorrupt)
		}
		if l1e&entryCopied == 0 {
			// Only snapshots share L2 tables, and images with snapshots
			// are opened read-only.
			return nil, 0, fmt.Errorf("L2 table at %#x is shared (refcount above 1): %w", off, ErrCorrupt)
		}
		t, err := im.l2Table(off)
		return t, i, err
	}
	off, err := im.allocCluster()
	if err != nil {
		return nil, 0, err
	}
	t := im.l2.put(&table{off: off, data: make([]byte, im.cs)}, true)
	im.setL1(l1i, uint64(off)|entryCopied)
	return t, i, nil
}

func (im *Image) setL1(i int64, e uint64) {
	im.l1[i] = e
	im.l1Dirty[i*8/im.cs] = true
	im.l1HasDirty = true
}

// setL2 changes an entry of a cached L2 table, in memory: Flush writes it.
func (im *Image) setL2(t *table, i int64, entry, bitmap uint64) {
	binary.BigEndian.PutUint64(t.data[i:], entry)
	if im.h.extendedL2 {
		binary.BigEndian.PutUint64(t.data[i+8:], bitmap)
	}
	im.l2.markDirty(t)
}

// release schedules the host clusters of an L2 entry that is being
// replaced to lose a refcount at the next flush, after the new entry is
// on disk.
func (im *Image) release(entry uint64) {
	switch {
	case entry&entryCompressed != 0:
		off, n := im.compressedRange(entry)
		im.pendingFree = append(im.pendingFree, hostRange{off, n})
		im.ccache.drop(entry)
	case entry&offsetMask != 0:
		im.pendingFree = append(im.pendingFree, hostRange{int64(entry & offsetMask), im.cs})
	}
}
