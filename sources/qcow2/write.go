package qcow2

import (
	"encoding/binary"
	"fmt"

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
		r, n, err := im.allocNext(p, off, done)
		if err != nil {
			im.meta.Unlock()
			return im.dropRuns(runs, done, err)
		}
		if r.n > 0 {
			if k := len(runs) - 1; k >= 0 && runs[k].host+runs[k].n == r.host && runs[k].ci+runs[k].n == r.ci {
				runs[k].n += r.n
			} else {
				runs = append(runs, r)
			}
		}
		done += n
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
	if err := im.pointRuns(runs); err != nil {
		return runs[0].at, err
	}
	return len(p), nil
}

// allocNext is one step of step 1 of writeAllocating, at p[done:]: whole
// clusters that need host clusters get a host-contiguous run, returned
// with the bytes of p it covers; otherwise the cluster at off+done is
// written as writeCluster does, and the run returned is empty (n 0). The
// caller holds im.meta exclusively.
func (im *Image) allocNext(p []byte, off int64, done int) (newRun, int, error) {
	o := off + int64(done)
	c := int(min(int64(len(p)-done), im.cs-o&(im.cs-1)))
	if err := im.maybeFlushMeta(); err != nil {
		return newRun{}, 0, err
	}
	if c == int(im.cs) {
		n, err := im.needNew(o>>im.cbits, int64(len(p)-done)>>im.cbits)
		if err != nil {
			return newRun{}, 0, err
		}
		if n > 0 {
			start, got, err := im.allocRun(n)
			if err != nil {
				return newRun{}, 0, err
			}
			return newRun{at: done, ci: o >> im.cbits, host: start, n: got}, int(got << im.cbits), nil
		}
	}
	if err := im.writeCluster(p[done:done+c], o); err != nil {
		return newRun{}, 0, err
	}
	return newRun{}, c, nil
}

// pointRuns is step 3 of writeAllocating: it points the L2 entries at the
// runs, whose data is written, and releases the clusters they replace. On
// error it frees the runs not yet pointed at. The caller holds im.meta
// exclusively.
func (im *Image) pointRuns(runs []newRun) error {
	for i := range runs {
		r := &runs[i]
		for r.n > 0 {
			t, k, err := im.l2ForWrite(r.ci)
			if err != nil {
				im.freeRunsLocked(runs[i:])
				return err
			}
			im.release(binary.BigEndian.Uint64(t.data[k:]))
			im.setL2(t, k, uint64(r.host<<im.cbits)|entryCopied, 0xffffffff)
			r.ci, r.host, r.n = r.ci+1, r.host+1, r.n-1
		}
	}
	return nil
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
