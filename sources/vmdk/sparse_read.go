package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// gtes copies into dst the GTEs of consecutive grains from grain, stopping
// at the end of its grain table or of the extent; it returns how many. The
// caller holds mu.
func (e *sparse) gtes(grain int64, dst []uint32) (int, error) {
	gdIdx := grain / e.perGT
	first := grain % e.perGT
	n := int(min(int64(len(dst)), e.perGT-first, e.grains-grain))
	if gdIdx >= int64(len(e.gd)) {
		return 0, e.corrupt(fmt.Sprintf("grain %d lies past the grain directory", grain))
	}
	if e.gd[gdIdx] == 0 {
		clear(dst[:n])
		return n, nil
	}
	e.cmu.Lock()
	defer e.cmu.Unlock()
	t, err := e.table(uint32(gdIdx))
	if err != nil {
		return 0, err
	}
	for i := range n {
		dst[i] = binary.LittleEndian.Uint32(t[(first+int64(i))*4:])
	}
	return n, nil
}

// Grain states, from a GTE.
const (
	grainUnalloc = iota // read the parent, or zeros
	grainZero           // reads as zeros, the parent is not consulted
	grainData
)

func (e *sparse) state(gte uint32) int {
	switch {
	case gte == 0:
		return grainUnalloc
	case gte == gteZeroed && e.zeroGrain:
		return grainZero
	}
	return grainData
}

// readAt fills p from the extent at off (relative to the extent).
// parent reads the grains that are not allocated, at extent offsets.
func (e *sparse) readAt(p []byte, off int64, parent func(p []byte, off int64) error) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var buf [64]uint32
	for len(p) > 0 {
		grain := off / e.grainBytes
		n, err := e.gtes(grain, buf[:])
		if err != nil {
			return err
		}
		// Coalesce grains of the same state (and, for data, contiguous in
		// the file) into one request.
		i := 0
		for i < n && len(p) > 0 {
			st := e.state(buf[i])
			within := off - (grain+int64(i))*e.grainBytes
			j := i + 1
			for j < n && e.state(buf[j]) == st && (st != grainData || (!e.compressed && buf[j] == buf[j-1]+uint32(e.h.grainSize))) {
				j++
			}
			run := min(int64(len(p)), int64(j-i)*e.grainBytes-within)
			switch {
			case st == grainUnalloc && parent == nil:
				clear(p[:run])
			case st == grainUnalloc:
				if err := parent(p[:run], off); err != nil {
					return err
				}
			case st == grainZero:
				clear(p[:run])
			case e.compressed:
				run = min(run, e.grainBytes-within)
				if err := e.readCompressed(p[:run], uint64(buf[i]), grain+int64(i), within); err != nil {
					return err
				}
				j = i + 1
			default:
				if err := e.readData(p[:run], int64(buf[i])*sectorSize+within); err != nil {
					return err
				}
			}
			p, off = p[run:], off+run
			i = j
		}
	}
	return nil
}

// readData reads grain bytes at file offset pos. Bytes past the end of the
// file read as zeros (a last grain may be cut short), but the grain must
// start inside the file.
func (e *sparse) readData(p []byte, pos int64) error {
	if pos >= e.fileSize {
		return e.corrupt(fmt.Sprintf("a grain at byte %d lies past the end of the file", pos))
	}
	n, err := e.f.ReadAt(p, pos)
	if err != nil && !(errors.Is(err, io.EOF) && pos+int64(n) >= e.fileSize) {
		return fmt.Errorf("%s: reading a grain: %w", e.name, err)
	}
	clear(p[n:])
	return nil
}
