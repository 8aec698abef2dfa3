package qcow2

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// maxHostOffset bounds host offsets to the 56 bits an L2 entry holds.
const maxHostOffset = int64(1) << 56

// initWrite loads what writing needs: the refcount table, and clears the
// autoclear feature bits, as the spec asks of writers that do not know
// them (bitmaps would no longer match the data).
func (im *Image) initWrite() error {
	h := im.h
	im.refBits = 1 << h.refcountOrder
	im.refEntries = im.cs * 8 / int64(im.refBits)
	im.refMax = ^uint64(0) >> (64 - im.refBits)
	n := int64(h.refTableClusters) << h.clusterBits
	if err := im.charge(n, fmt.Sprintf("the refcount table of %s (%d clusters)", im.path, h.refTableClusters)); err != nil {
		return err
	}
	im.refTable = make([]uint64, n/8)
	if err := readTable(im.f, im.refTable, int64(h.refTableOffset)); err != nil {
		return fmt.Errorf("reading the refcount table: %w", err)
	}
	im.refTableOff = int64(h.refTableOffset)
	im.freeHint = 1
	im.endCluster = (im.fileSize + im.cs - 1) / im.cs
	if h.version == 3 && h.autoclear != 0 {
		var zero [8]byte
		if _, err := im.f.WriteAt(zero[:], offAutoclear); err != nil {
			return fmt.Errorf("clearing the autoclear features: %w", err)
		}
		h.autoclear = 0
	}
	return nil
}

// refBlock returns the refcount block that covers host cluster c and c's
// index in it; nil when there is none and create is false. With create it
// makes one (and grows the refcount table) as needed, avoiding the
// clusters in im.reserved.
func (im *Image) refBlock(c int64, create bool) (*table, int64, error) {
	ri := c / im.refEntries
	if ri >= int64(len(im.refTable)) {
		if !create {
			return nil, 0, nil
		}
		if err := im.growRefTable(ri); err != nil {
			return nil, 0, err
		}
	}
	if e := im.refTable[ri]; e&^offsetMask&^0x1ff != 0 {
		return nil, 0, fmt.Errorf("refcount table entry %d is %#x, past the 2^56 bytes a qcow2 file can have: %w", ri, e, ErrCorrupt)
	}
	off := int64(im.refTable[ri] & offsetMask)
	if off == 0 {
		if !create {
			return nil, 0, nil
		}
		var err error
		if off, err = im.newRefBlock(ri); err != nil {
			return nil, 0, err
		}
	}
	if off%im.cs != 0 {
		return nil, 0, fmt.Errorf("refcount block at unaligned offset %#x: %w", off, ErrCorrupt)
	}
	if !im.inFile(off) {
		return nil, 0, fmt.Errorf("refcount block at %#x lies past the end of the file: %w", off, ErrCorrupt)
	}
	t := im.refBlocks.get(off)
	if t == nil {
		data := make([]byte, im.cs)
		if err := preadFull(im.f, data, off); err != nil {
			return nil, 0, fmt.Errorf("reading a refcount block: %w", err)
		}
		t = im.refBlocks.put(&table{off: off, data: data}, false)
	}
	return t, c % im.refEntries, nil
}

// refcount returns the refcount of host cluster c (0 where no block
// covers it).
func (im *Image) refcount(c int64) (uint64, error) {
	t, i, err := im.refBlock(c, false)
	if t == nil || err != nil {
		return 0, err
	}
	return getRefcount(t.data, i, im.h.refcountOrder), nil
}

// setRefcount sets the refcount of host cluster c, in memory.
func (im *Image) setRefcount(c int64, v uint64) error { return im.setRefcounts(c, 1, v) }

// setRefcounts sets the refcounts of host clusters [c, c+n) to v, making
// refcount blocks (and growing the table) as needed, which avoids the
// clusters in im.reserved. The blocks change in memory only: flushes write
// them (writeRefBlocks). Any refcount in memory may reach the disk at any
// time: increments come before the references that need them exist,
// decrements after the removal of the reference is durable (flushMeta).
func (im *Image) setRefcounts(c, n int64, v uint64) error {
	if v > im.refMax {
		return fmt.Errorf("refcount of cluster %d would exceed %d bits: %w", c, im.refBits, syscall.EOVERFLOW)
	}
	for end := c + n; c < end; {
		t, i, err := im.refBlock(c, true)
		if err != nil {
			return err
		}
		k := min(end-c, im.refEntries-i)
		for j := range k {
			setRefcount(t.data, i+j, im.h.refcountOrder, v)
		}
		im.refBlocks.markDirty(t)
		c += k
	}
	return nil
}

// writeRefBlocks writes the refcount blocks changed in memory (without
// syncing).
func (im *Image) writeRefBlocks() error {
	if im.refBlocks.dirtyCount() == 0 {
		return nil
	}
	for _, t := range im.refBlocks.dirtyTables() {
		if _, err := im.f.WriteAt(t.data, t.off); err != nil {
			return fmt.Errorf("writing a refcount block: %w", err)
		}
		im.refBlocks.clean(t)
	}
	return nil
}

// newRefBlock creates the refcount block of refcount table index ri. No
// block covers the clusters [ri*E, (ri+1)*E) yet, so they are all free:
// the block goes into the first of them that is not reserved, and counts
// itself; never into cluster 0, the header (only a corrupt image has no
// block for it), whose offset would read as no block. It is written and
// synced before the table points to it.
func (im *Image) newRefBlock(ri int64) (int64, error) {
	first := ri * im.refEntries
	c := max(first, 1)
	for ; c < first+im.refEntries && im.isReserved(c); c++ {
	}
	if c == first+im.refEntries || c*im.cs >= maxHostOffset {
		return 0, fmt.Errorf("no room for a refcount block: %w", syscall.ENOSPC)
	}
	off := c * im.cs
	data := make([]byte, im.cs)
	setRefcount(data, c-first, im.h.refcountOrder, 1)
	if _, err := im.f.WriteAt(data, off); err != nil {
		return 0, fmt.Errorf("writing a refcount block: %w", err)
	}
	if err := im.sync(); err != nil {
		return 0, err
	}
	im.refTable[ri] = uint64(off)
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(off))
	if _, err := im.f.WriteAt(e[:], im.refTableOff+ri*8); err != nil {
		return 0, fmt.Errorf("writing the refcount table: %w", err)
	}
	im.refBlocks.put(&table{off: off, data: data}, false)
	im.endCluster = max(im.endCluster, c+1)
	return off, nil
}

// hasRefBlock reports whether a refcount block covers host cluster c.
func (im *Image) hasRefBlock(c int64) bool {
	ri := c / im.refEntries
	return ri < int64(len(im.refTable)) && im.refTable[ri]&offsetMask != 0
}

// decRefcount drops one reference to host cluster c.
func (im *Image) decRefcount(c int64) error {
	rc, err := im.refcount(c)
	if err != nil {
		return err
	}
	if rc == 0 {
		return fmt.Errorf("freeing cluster %d whose refcount is 0: %w", c, ErrCorrupt)
	}
	if err := im.setRefcount(c, rc-1); err != nil {
		return err
	}
	if rc == 1 && c < im.freeHint {
		im.freeHint = c
	}
	return nil
}

// getRefcount reads entry i of a refcount block of 1<<order-bit entries.
// Entries narrower than a byte are packed from the low bits up, as qemu
// does (get_refcount_ro0..2).
func getRefcount(d []byte, i int64, order uint32) uint64 {
	switch order {
	case 0, 1, 2:
		bits := int64(1) << order
		per := 8 / bits
		return uint64(d[i/per]>>((i%per)*bits)) & (1<<bits - 1)
	case 3:
		return uint64(d[i])
	case 4:
		return uint64(binary.BigEndian.Uint16(d[i*2:]))
	case 5:
		return uint64(binary.BigEndian.Uint32(d[i*4:]))
	default:
		return binary.BigEndian.Uint64(d[i*8:])
	}
}

// setRefcount sets entry i and returns the byte range it changed.
func setRefcount(d []byte, i int64, order uint32, v uint64) (lo, hi int64) {
	switch order {
	case 0, 1, 2:
		bits := int64(1) << order
		per := 8 / bits
		shift := (i % per) * bits
		mask := byte(1<<bits-1) << shift
		d[i/per] = d[i/per]&^mask | byte(v)<<shift&mask
		return i / per, i/per + 1
	case 3:
		d[i] = byte(v)
		return i, i + 1
	case 4:
		binary.BigEndian.PutUint16(d[i*2:], uint16(v))
		return i * 2, i*2 + 2
	case 5:
		binary.BigEndian.PutUint32(d[i*4:], uint32(v))
		return i * 4, i*4 + 4
	default:
		binary.BigEndian.PutUint64(d[i*8:], v)
		return i * 8, i*8 + 8
	}
}
