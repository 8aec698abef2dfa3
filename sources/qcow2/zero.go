package qcow2

import "github.com/nbdloop/nbdloop/sources"

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
