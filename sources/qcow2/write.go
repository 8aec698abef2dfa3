package qcow2

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// WriteAt writes virtual bytes. Writes to clusters that are allocated and
// not shared are written in place under the shared lock, in one pwrite per
// run of host-contiguous clusters. The rest of the request takes the
// exclusive lock, briefly when it covers whole clusters that need a new
// host cluster (see writeAllocating); partial clusters that need one
// (copy-on-write) and replaced compressed or zero clusters are written
// under it.
func (im *Image) WriteAt(p []byte, off int64) (int, error) {
	if im.ro {
		return 0, sources.ErrReadOnly
	}
	if err := sources.CheckRange(off, int64(len(p)), im.size); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	im.dataWritten.Store(true)
	im.meta.RLock()
	n, err := im.writeInPlace(p, off)
	im.meta.RUnlock()
	if err != nil || n == len(p) {
		return n, err
	}
	return im.writeAllocating(p, off, n)
}

// newRun is a run of whole guest clusters that get new, host-contiguous
// clusters: p[at:at+n*cs] goes to host cluster host on, guest cluster ci
// on.
type newRun struct {
	at       int
	ci, host int64
	n        int64
}

// writeAllocating writes p[done:] at off+done in three steps, so that
// concurrent allocating writes (a queue of sequential 1 MiB writes) only
// serialize on the metadata work:
//
//  1. Under the exclusive lock, the whole clusters that need a host cluster
//     get host-contiguous runs (allocRun: their refcounts are set in
//     memory, no I/O); the other clusters are written as writeCluster
//     does.
//  2. Without the lock, each run's data is written, in one pwrite.
//  3. Under the exclusive lock again, the L2 entries are pointed at the
//     runs, and the clusters they replace are released.
//
// Until step 3, nothing refers to the new clusters (a crash leaks them),
// and readers see the clusters' old contents, as they may while the write
// is in progress. A write that lands on one of the clusters meanwhile
// (concurrently with this one, which covers the whole cluster) is
// replaced by this one, as if it had come first; its own new cluster, if
// it made one, is released like any replaced cluster. Flush only writes
// the L2 entries of step 3, after syncing, so data still comes before the
// references to it.
func (im *Image) writeAllocating(p []byte, off int64, done int) (int, error) {
	var buf [4]newRun
	runs := buf[:0]
	im.meta.Lock()
	for done < len(p) {
		o := off + int64(done)
		c := int(min(int64(len(p)-done), im.cs-o&(im.cs-1)))
		if err := im.maybeFlushMeta(); err != nil {
			im.meta.Unlock()
			return im.dropRuns(runs, done, err)
		}
		if c == int(im.cs) {
			n, err := im.needNew(o>>im.cbits, int64(len(p)-done)>>im.cbits)
			if err != nil {
				im.meta.Unlock()
				return im.dropRuns(runs, done, err)
			}
			if n > 0 {
				start, got, err := im.allocRun(n)
				if err != nil {
					im.meta.Unlock()
					return im.dropRuns(runs, done, err)
				}
				if k := len(runs) - 1; k >= 0 && runs[k].host+runs[k].n == start && runs[k].ci+runs[k].n == o>>im.cbits {
					runs[k].n += got
				} else {
					runs = append(runs, newRun{at: done, ci: o >> im.cbits, host: start, n: got})
				}
				done += int(got << im.cbits)
				continue
			}
		}
		if err := im.writeCluster(p[done:done+c], o); err != nil {
			im.meta.Unlock()
			return im.dropRuns(runs, done, err)
		}
		done += c
	}
	im.meta.Unlock()
	if len(runs) == 0 {
		return len(p), nil
	}
	for _, r := range runs {
		if _, err := im.f.WriteAt(p[r.at:r.at+int(r.n<<im.cbits)], r.host<<im.cbits); err != nil {
			return im.dropRuns(runs, len(p), fmt.Errorf("writing the image: %w", err))
		}
	}
	im.meta.Lock()
	defer im.meta.Unlock()
	for i := range runs {
		r := &runs[i]
		for r.n > 0 {
			t, k, err := im.l2ForWrite(r.ci)
			if err != nil {
				im.freeRunsLocked(runs[i:])
				return runs[0].at, err
			}
			im.release(binary.BigEndian.Uint64(t.data[k:]))
			im.setL2(t, k, uint64(r.host<<im.cbits)|entryCopied, 0xffffffff)
			r.ci, r.host, r.n = r.ci+1, r.host+1, r.n-1
		}
	}
	return len(p), nil
}

// needNew counts the guest clusters from ci on, at most max, that a write
// covering them whole gives a new host cluster: those neither writable in
// place nor a standard cluster of our own (reused by writeCluster). It
// makes their L2 tables, so that these come before the data in the file.
// The caller holds im.meta exclusively.
func (im *Image) needNew(ci, max int64) (int64, error) {
	var t *table
	l1i := int64(-1)
	for n := int64(0); n < max; n++ {
		var i int64
		if (ci+n)>>im.l2bits != l1i {
			var err error
			if t, i, err = im.l2ForWrite(ci + n); err != nil {
				return n, err
			}
			l1i = (ci + n) >> im.l2bits
		} else {
			i = ((ci + n) & (1<<im.l2bits - 1)) * im.h.l2EntryBytes
		}
		entry, bitmap := binary.BigEndian.Uint64(t.data[i:]), uint64(0)
		if im.h.extendedL2 {
			bitmap = binary.BigEndian.Uint64(t.data[i+8:])
		}
		if im.inPlace(entry, bitmap) || im.reusable(entry) {
			return n, nil
		}
	}
	return max, nil
}

// dropRuns frees the clusters of runs that will not be referenced, since
// the write failed, and returns with err the count of bytes surely
// written: at, or fewer if a run starts before.
func (im *Image) dropRuns(runs []newRun, at int, err error) (int, error) {
	if len(runs) == 0 {
		return at, err
	}
	im.meta.Lock()
	im.freeRunsLocked(runs)
	im.meta.Unlock()
	return min(at, runs[0].at), err
}

// freeRunsLocked drops the refcounts that allocRun set: nothing refers to
// these clusters. The caller holds im.meta exclusively.
func (im *Image) freeRunsLocked(runs []newRun) {
	for _, r := range runs {
		if im.setRefcounts(r.host, r.n, 0) == nil {
			im.freeHint = min(im.freeHint, r.host)
		}
	}
}

// writeInPlace writes the longest prefix of p that falls on clusters it
// can overwrite in place (allocated, refcount 1, neither compressed nor
// zero) and returns its length. The caller holds im.meta.
func (im *Image) writeInPlace(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		o := off + int64(done)
		ci := o >> im.cbits
		in := o & (im.cs - 1)
		entry, bitmap, err := im.lookup(ci)
		if err != nil {
			return done, err
		}
		if !im.inPlace(entry, bitmap) {
			return done, nil
		}
		host := int64(entry & offsetMask)
		n := min(int64(len(p)-done), im.cs-in)
		for int64(done)+n < int64(len(p)) {
			e, b, err := im.lookup(ci + (in+n)>>im.cbits)
			if err != nil || !im.inPlace(e, b) || int64(e&offsetMask) != host+in+n {
				break
			}
			n += min(int64(len(p)-done)-n, im.cs)
		}
		if _, err := im.f.WriteAt(p[done:done+int(n)], host+in); err != nil {
			return done, fmt.Errorf("writing the image: %w", err)
		}
		done += int(n)
	}
	return done, nil
}

func (im *Image) inPlace(entry, bitmap uint64) bool {
	return entry&entryCopied != 0 && im.fullData(entry, bitmap) && int64(entry&offsetMask)%im.cs == 0 && im.inFile(int64(entry&offsetMask))
}

// inFile reports whether the cluster at host offset off lies in the file
// (as it was at open, or allocated since): metadata and data are written
// only there, not wherever a corrupt entry points.
func (im *Image) inFile(off int64) bool {
	return off >= 0 && off>>im.cbits < im.endCluster
}

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

// writeCluster writes p (which lies in one cluster) at off, under the
// exclusive lock: in place when it can; else it builds the whole cluster
// (what it reads as now, from the backing file, a compressed cluster or
// zeros, with p on top), writes it to a cluster of its own and points the
// L2 entry at it, dropping the old cluster's refcount at the next flush.
func (im *Image) writeCluster(p []byte, off int64) error {
	ci := off >> im.cbits
	in := off & (im.cs - 1)
	t, i, err := im.l2ForWrite(ci)
	if err != nil {
		return err
	}
	entry, bitmap := binary.BigEndian.Uint64(t.data[i:]), uint64(0)
	if im.h.extendedL2 {
		bitmap = binary.BigEndian.Uint64(t.data[i+8:])
	}
	host := int64(entry & offsetMask)
	if im.inPlace(entry, bitmap) {
		if _, err := im.f.WriteAt(p, host+in); err != nil {
			return fmt.Errorf("writing the image: %w", err)
		}
		return nil
	}
	reuse := im.reusable(entry)
	data := p
	if int64(len(p)) != im.cs {
		bp := im.getBuf()
		defer im.putBuf(bp)
		data = *bp
		if err := im.readAt(data, ci<<im.cbits); err != nil {
			return err
		}
		copy(data[in:], p)
	}
	if !reuse {
		if host, err = im.allocCluster(); err != nil {
			return err
		}
	}
	if _, err := im.f.WriteAt(data, host); err != nil {
		return fmt.Errorf("writing the image: %w", err)
	}
	if !reuse {
		im.release(entry)
	}
	im.setL2(t, i, uint64(host)|entryCopied, 0xffffffff)
	return nil
}

// reusable reports whether an L2 entry is a standard cluster of our own
// (refcount 1, aligned; a v3 zero cluster that kept its allocation, or one
// with unallocated subclusters), which a write of the whole cluster may
// reuse.
func (im *Image) reusable(entry uint64) bool {
	host := int64(entry & offsetMask)
	return entry&entryCompressed == 0 && entry&entryCopied != 0 && host != 0 && host%im.cs == 0 && im.inFile(host)
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

// Zero makes [off, off+length) read as zeros: whole clusters become zero
// clusters (v3; extended L2: every subcluster zero), keeping their host
// cluster when !mayTrim; in v2 images without a backing file they are
// deallocated, with one they are written. Partial clusters are written.
func (im *Image) Zero(off, length int64, mayTrim bool) error {
	return im.zeroRange(off, length, mayTrim, false)
}

// Trim deallocates the whole clusters of the range (v3: as zero clusters;
// v2: only without a backing file, where unallocated reads as zeros).
// Partial clusters are left as they are.
func (im *Image) Trim(off, length int64) error {
	return im.zeroRange(off, length, true, true)
}

func (im *Image) zeroRange(off, length int64, mayTrim, trim bool) error {
	if im.ro {
		return sources.ErrReadOnly
	}
	if err := sources.CheckRange(off, length, im.size); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	im.dataWritten.Store(true)
	im.meta.Lock()
	defer im.meta.Unlock()
	end := off + length
	for off < end {
		ci := off >> im.cbits
		if im.backing == nil && im.l1[ci>>im.l2bits] == 0 {
			// No L2 table and no backing file: this whole table's
			// range reads as zeros already.
			off = min(end, (ci>>im.l2bits+1)<<(im.l2bits+im.cbits))
			continue
		}
		if err := im.maybeFlushMeta(); err != nil {
			return err
		}
		cstart := ci << im.cbits
		cend := min(cstart+im.cs, im.size) // the last cluster ends at the virtual size
		n := min(end, cstart+im.cs) - off
		var err error
		switch {
		case off == cstart && off+n >= cend:
			err = im.zeroCluster(ci, mayTrim, trim)
		case !trim:
			err = im.writeCluster(im.zeros()[:n], off)
		}
		if err != nil {
			return err
		}
		off += n
	}
	return nil
}

func (im *Image) zeros() []byte {
	if im.zeroBuf == nil {
		im.zeroBuf = make([]byte, im.cs)
	}
	return im.zeroBuf
}

// zeroCluster makes guest cluster ci read as zeros.
func (im *Image) zeroCluster(ci int64, mayTrim, trim bool) error {
	entry, bitmap, err := im.lookup(ci)
	if err != nil {
		return err
	}
	if entry == 0 && bitmap == 0 && im.backing == nil {
		return nil // unallocated without backing: zeros already
	}
	if im.h.version == 2 {
		if im.backing != nil {
			if trim {
				return nil
			}
			return im.writeCluster(im.zeros(), ci<<im.cbits)
		}
		t, i, err := im.l2ForWrite(ci)
		if err != nil {
			return err
		}
		im.release(entry)
		im.setL2(t, i, 0, 0)
		return nil
	}
	host := int64(entry & offsetMask)
	keep := !mayTrim && im.reusable(entry)
	var newEntry, newBitmap uint64
	if im.h.extendedL2 {
		newBitmap = 0xffffffff << 32
	} else {
		newEntry = entryZero
	}
	if keep {
		newEntry |= uint64(host) | entryCopied
	}
	if entry == newEntry && bitmap == newBitmap {
		return nil
	}
	t, i, err := im.l2ForWrite(ci)
	if err != nil {
		return err
	}
	if !keep {
		im.release(entry)
	}
	im.setL2(t, i, newEntry, newBitmap)
	return nil
}

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
	if im.l1HasDirty {
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
	}
	// Every reference is on disk now: the replaced clusters are free.
	free := im.pendingFree
	im.pendingFree = nil
	for _, r := range free {
		for c := r.off / im.cs; c <= (r.off+r.n-1)/im.cs; c++ {
			if err := im.decRefcount(c); err != nil {
				return err
			}
		}
	}
	return im.writeRefBlocks()
}

// sync is fdatasync on the image file.
func (im *Image) sync() error {
	rc, err := im.f.SyscallConn()
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
