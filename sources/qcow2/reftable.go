package qcow2

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// growRefTable moves the refcount table to a larger one that has index
// ri: the new table is written (with the refcounts of its own clusters,
// which may need new blocks) and synced, then the header is pointed at it
// and synced, then the old table's clusters are freed.
func (im *Image) growRefTable(ri int64) error {
	perCluster := im.cs / 8
	n := max(ri+1, int64(len(im.refTable))*3/2)
	n = (n + perCluster - 1) / perCluster * perCluster
	clusters := n / perCluster
	if clusters*im.cs > maxRefTableBytes {
		return fmt.Errorf("refcount table would exceed %d MiB: %w", maxRefTableBytes>>20, syscall.ENOSPC)
	}
	// A run of free clusters for the new table.
	start, err := im.findFree(clusters)
	if err != nil {
		return err
	}
	grow := (n - int64(len(im.refTable))) * 8
	if err := im.charge(grow, "the refcount table of "+im.path); err != nil {
		return fmt.Errorf("growing the refcount table: %w: %w", err, syscall.ENOSPC)
	}
	oldTable, oldOff := im.refTable, im.refTableOff
	oldClusters := int64(len(oldTable)) * 8 / im.cs
	im.refTable = make([]uint64, n)
	copy(im.refTable, oldTable)
	im.refTableOff = start * im.cs
	im.endCluster = max(im.endCluster, start+clusters)
	im.reserved = append(im.reserved, hostRange{start, clusters})
	defer func() { im.reserved = im.reserved[:len(im.reserved)-1] }()
	undo := func(err error) error {
		im.refTable, im.refTableOff = oldTable, oldOff
		im.budget.Release(grow)
		im.charged -= grow
		return err
	}
	if err := im.writeRefTable(start, clusters); err != nil {
		return undo(err)
	}
	if err := im.writeRefTableHeader(clusters); err != nil {
		return undo(err)
	}
	if err := im.sync(); err != nil {
		return err
	}
	im.h.refTableOffset, im.h.refTableClusters = uint64(im.refTableOff), uint32(clusters)
	for c := oldOff / im.cs; c < oldOff/im.cs+oldClusters; c++ {
		if err := im.decRefcount(c); err != nil {
			return err
		}
	}
	return nil
}

// writeRefTable writes the new refcount table, of clusters clusters from
// host cluster start, after counting its clusters, and syncs it with the
// refcount blocks.
func (im *Image) writeRefTable(start, clusters int64) error {
	for c := start; c < start+clusters; c++ {
		if err := im.setRefcount(c, 1); err != nil {
			return err
		}
	}
	b := make([]byte, int64(len(im.refTable))*8)
	for i, e := range im.refTable {
		binary.BigEndian.PutUint64(b[i*8:], e)
	}
	if _, err := im.f.WriteAt(b, im.refTableOff); err != nil {
		return fmt.Errorf("writing the refcount table: %w", err)
	}
	if err := im.writeRefBlocks(); err != nil {
		return err
	}
	return im.sync()
}

// writeRefTableHeader points the header at the refcount table, of
// clusters clusters (not synced).
func (im *Image) writeRefTableHeader(clusters int64) error {
	var hdr [12]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(im.refTableOff))
	binary.BigEndian.PutUint32(hdr[8:], uint32(clusters))
	if _, err := im.f.WriteAt(hdr[:], offRefTable); err != nil {
		return fmt.Errorf("writing the header: %w", err)
	}
	return nil
}
