package vmdk

import "fmt"

// dataGTE checks that a data GTE may be written to: it must point
// past the header and metadata (overhead), so that a hostile image cannot
// turn guest writes into writes over its own tables.
func (e *sparse) dataGTE(gte uint32) error {
	if uint64(gte) < e.h.overhead || uint64(gte) < 1 || int64(gte)*sectorSize >= e.fileSize {
		return e.corrupt(fmt.Sprintf("grain table entry %d points into the metadata or past the end of the file", gte))
	}
	return nil
}

// writeAt writes p at off (relative to the extent). parent supplies the
// rest of a grain that is allocated by a partial write.
func (e *sparse) writeAt(p []byte, off int64, parent func(p []byte, off int64) error) error {
	if !e.writable {
		return fmt.Errorf("%s: %w", e.name, errExtentReadOnly)
	}
	e.mu.RLock()
	done, err := e.writeAllocated(p, off)
	e.mu.RUnlock()
	if err != nil || done == int64(len(p)) {
		return err
	}
	p, off = p[done:], off+done
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.writeAllocating(p, off, off+int64(len(p)), parent, modeData)
}

// writeAllocated writes the leading part of p that falls on allocated
// grains and returns its length. The caller holds mu for reading.
func (e *sparse) writeAllocated(p []byte, off int64) (int64, error) {
	var buf [64]uint32
	var done int64
	for done < int64(len(p)) {
		grain := (off + done) / e.grainBytes
		n, err := e.gtes(grain, buf[:])
		if err != nil {
			return done, err
		}
		for i := range n {
			if done == int64(len(p)) {
				break
			}
			if e.state(buf[i]) != grainData {
				return done, nil
			}
			if err := e.dataGTE(buf[i]); err != nil {
				return done, err
			}
			at := off + done
			within := at - (grain+int64(i))*e.grainBytes
			run := min(int64(len(p))-done, e.grainBytes-within)
			if _, err := e.f.WriteAt(p[done:done+run], int64(buf[i])*sectorSize+within); err != nil {
				return done, fmt.Errorf("%s: writing a grain: %w", e.name, err)
			}
			done += run
		}
	}
	return done, nil
}

// Write modes of writeAllocating.
const (
	modeData     = iota // write p
	modeZero            // make the range read as zeros, freeing whole grains where possible
	modeZeroKeep        // the same, but allocated grains stay allocated (NBD_CMD_FLAG_NO_HOLE)
)

// maxChunk bounds the new grains buffered by one writeChunk call (a power
// of 2, so a multiple of every grain size).
const maxChunk = 32 << 20

// writeAllocating writes p (or zeros, see the modes) to [off, end),
// allocating grains as needed, one grain table's span at a time. The caller
// holds mu for writing.
func (e *sparse) writeAllocating(p []byte, off, end int64, parent func(p []byte, off int64) error, mode int) error {
	span := e.perGT * e.grainBytes
	for off < end {
		chunkEnd := min(end, (off/span+1)*span, off-off%e.grainBytes+maxChunk)
		var q []byte
		if mode == modeData {
			q, p = p[:chunkEnd-off], p[chunkEnd-off:]
		}
		if err := e.writeChunk(q, off, chunkEnd, parent, mode); err != nil {
			return err
		}
		off = chunkEnd
	}
	return nil
}

// zero makes [off, off+n) read as zeros (see writeChunk); without
// mayTrim, allocated grains stay allocated.
func (e *sparse) zero(off, n int64, mayTrim bool, parent func(p []byte, off int64) error) error {
	if !e.writable {
		return fmt.Errorf("%s: %w", e.name, errExtentReadOnly)
	}
	mode := modeZero
	if !mayTrim {
		mode = modeZeroKeep
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.writeAllocating(nil, off, off+n, parent, mode)
}
