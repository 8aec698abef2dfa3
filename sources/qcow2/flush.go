package qcow2

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Flush makes completed writes durable. Without metadata changes since the
// last flush it is one fdatasync, under the shared lock; otherwise it
// syncs the data, writes the L2 tables, syncs, writes the L1 table, syncs,
// and then drops the refcounts of the clusters that lost their reference.
func (im *Image) Flush() error {
	if im.ro {
		return nil
	}
	im.meta.RLock()
	clean := !im.metaDirty()
	if clean {
		var err error
		if im.dataWritten.Swap(false) {
			if err = im.sync(); err != nil {
				im.dataWritten.Store(true)
			}
		}
		im.meta.RUnlock()
		return err
	}
	im.meta.RUnlock()
	im.meta.Lock()
	defer im.meta.Unlock()
	return im.flushMeta()
}

func (im *Image) metaDirty() bool {
	return im.l1HasDirty || len(im.pendingFree) > 0 || im.l2.dirtyCount() > 0 || im.refBlocks.dirtyCount() > 0
}

// maybeFlushMeta flushes when dirty L2 tables fill half of the L2 cache,
// and writes the refcount blocks when dirty ones fill half of theirs,
// which keeps the caches' memory bounded. The caller holds im.meta
// exclusively.
func (im *Image) maybeFlushMeta() error {
	if im.l2.dirtyCount() > im.l2.max/2 || len(im.pendingFree) > 4096 {
		return im.flushMeta()
	}
	if im.refBlocks.dirtyCount() > im.refBlocks.max/2 {
		return im.writeRefBlocks()
	}
	return nil
}

// flushMeta is Flush under the exclusive lock: refcount blocks, sync, L2
// tables, sync, L1 table, sync; then the replaced clusters lose their
// refcounts, which are written (not synced: until the next flush, a crash
// leaks these clusters).
func (im *Image) flushMeta() error {
	im.dataWritten.Store(false)
	err := im.writeRefBlocks()
	if err == nil {
		err = im.sync()
	}
	if err != nil {
		im.dataWritten.Store(true)
		return err
	}
	if !im.metaDirty() {
		return nil
	}
	if err := im.writeL2Tables(); err != nil {
		return err
	}
	if err := im.writeL1(); err != nil {
		return err
	}
	// Every reference is on disk now: the replaced clusters are free.
	if err := im.freePending(); err != nil {
		return err
	}
	return im.writeRefBlocks()
}

// writeL2Tables writes the L2 tables changed in memory and syncs them.
func (im *Image) writeL2Tables() error {
	dirty := im.l2.dirtyTables()
	for _, t := range dirty {
		if _, err := im.f.WriteAt(t.data, t.off); err != nil {
			return fmt.Errorf("writing an L2 table: %w", err)
		}
	}
	if len(dirty) > 0 {
		if err := im.sync(); err != nil {
			return err
		}
		for _, t := range dirty {
			im.l2.clean(t)
		}
	}
	return nil
}

// writeL1 writes the clusters of the L1 table changed in memory and syncs
// them.
func (im *Image) writeL1() error {
	if !im.l1HasDirty {
		return nil
	}
	per := im.cs / 8
	b := make([]byte, im.cs)
	for ci, d := range im.l1Dirty {
		if !d {
			continue
		}
		lo := int64(ci) * per
		hi := min(lo+per, int64(len(im.l1)))
		for j := lo; j < hi; j++ {
			binary.BigEndian.PutUint64(b[(j-lo)*8:], im.l1[j])
		}
		if _, err := im.f.WriteAt(b[:(hi-lo)*8], int64(im.h.l1Offset)+lo*8); err != nil {
			return fmt.Errorf("writing the L1 table: %w", err)
		}
	}
	if err := im.sync(); err != nil {
		return err
	}
	clear(im.l1Dirty)
	im.l1HasDirty = false
	return nil
}

// freePending drops, in memory, one refcount of each cluster replaced
// since the last flush (im.pendingFree).
func (im *Image) freePending() error {
	free := im.pendingFree
	im.pendingFree = nil
	for _, r := range free {
		for c := r.off / im.cs; c <= (r.off+r.n-1)/im.cs; c++ {
			if err := im.decRefcount(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// sync is fdatasync on the image file.
func (im *Image) sync() error {
	f, ok := im.f.(*os.File)
	if !ok {
		return nil // a sourceFile is never written
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("syncing the image: %w", serr)
	}
	return nil
}
