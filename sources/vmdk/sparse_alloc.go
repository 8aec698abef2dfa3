package vmdk

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// writeChunk handles [off, end), which lies inside one grain table: it
// writes to allocated grains in place, then writes the new grains in one
// request at the end of the file, and only then the grain tables that point
// to them, the redundant one first. Zero modes: whole grains become
// zeroed-grain GTEs where the header allows it (modeZero), grains that
// already read as zeros are left alone, and the others are written with
// zeros.
func (e *sparse) writeChunk(p []byte, off, end int64, parent func(p []byte, off int64) error, mode int) error {
	gdIdx := uint32(off / (e.perGT * e.grainBytes))
	tbl, err := e.loadTable(gdIdx, off)
	if err != nil {
		return err
	}
	first := off / e.grainBytes
	c := chunk{
		p: p, off: off, end: end, parent: parent, mode: mode, zero: mode != modeData,
		tbl: tbl, base: first - first%e.perGT, first: first, last: (end - 1) / e.grainBytes,
		lo: len(tbl), hi: -1,
	}
	nNew := e.countNewGrains(&c)
	if nNew > 0 && e.next+nNew*int64(e.h.grainSize)+2*int64(e.h.gtSectors()) > maxExtentSectors {
		return fmt.Errorf("%s: the sparse extent file would grow past 2 TiB: %w", e.name, syscall.ENOSPC)
	}
	c.newData = make([]byte, nNew*e.grainBytes)
	c.newSector = e.next
	for g := c.first; g <= c.last; g++ {
		if err := e.writeChunkGrain(&c, g); err != nil {
			return err
		}
	}
	if c.hi < 0 {
		return nil
	}
	if err := e.appendGrains(c.newData, c.newSector, nNew); err != nil {
		return err
	}
	return e.writeTable(gdIdx, tbl, c.lo, c.hi+1)
}

// chunk is the state of one writeChunk call: the range [off, end) (data p
// in modeData), grains first to last of one grain table, whose GTEs tbl
// holds (tbl[0] is grain base's), and the new grains being built.
type chunk struct {
	p           []byte
	off, end    int64
	parent      func(p []byte, off int64) error
	mode        int
	zero        bool // a zero mode
	tbl         []uint32
	base        int64
	first, last int64
	newData     []byte // the new grains, in order, written at newSector
	newSector   int64
	k           int64  // new grains built so far
	zeros       []byte // one grain of zeros, made on first use
	lo, hi      int    // the span of changed GTEs; hi < 0: none
}

// changed records that GTE i of the chunk's table changed.
func (c *chunk) changed(i int) { c.lo, c.hi = min(c.lo, i), max(c.hi, i) }

// grainPart is the part of one grain that a chunk writes: [lo, hi) of the
// grain that starts at byte gstart of the extent, whose GTE is tbl[i];
// whole if that covers the grain.
type grainPart struct {
	i              int
	gstart, lo, hi int64
	whole          bool
}

// loadTable returns the GTEs of grain table gdIdx (zeros when the directory
// has none yet), which maps byte off of the extent.
func (e *sparse) loadTable(gdIdx uint32, off int64) ([]uint32, error) {
	if int(gdIdx) >= len(e.gd) {
		return nil, e.corrupt(fmt.Sprintf("byte %d lies past the grain directory", off))
	}
	tbl := make([]uint32, e.perGT)
	if e.gd[gdIdx] != 0 {
		e.cmu.Lock()
		t, err := e.table(gdIdx)
		if err == nil {
			for i := range tbl {
				tbl[i] = binary.LittleEndian.Uint32(t[i*4:])
			}
		}
		e.cmu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	return tbl, nil
}

// countNewGrains counts the grains of the chunk that need a new grain.
func (e *sparse) countNewGrains(c *chunk) int64 {
	var nNew int64
	for g := c.first; g <= c.last; g++ {
		if e.needsGrain(c.tbl[g-c.base], c.zero, e.whole(g, c.off, c.end), c.parent != nil) {
			nNew++
		}
	}
	return nNew
}

// writeChunkGrain handles grain g of the chunk: into a new grain if it
// needs one, else in place or by its GTE.
func (e *sparse) writeChunkGrain(c *chunk, g int64) error {
	gstart := g * e.grainBytes
	gp := grainPart{
		i: int(g - c.base), gstart: gstart,
		lo: max(c.off, gstart), hi: min(c.end, gstart+e.grainBytes),
		whole: e.whole(g, c.off, c.end),
	}
	if e.needsGrain(c.tbl[gp.i], c.zero, gp.whole, c.parent != nil) {
		return e.buildNewGrain(c, gp)
	}
	return e.writeOldGrain(c, gp)
}

// writeOldGrain handles a grain of the chunk that keeps its GTE's state:
// zero modes turn a whole grain into a zeroed-grain GTE where allowed and
// leave a grain that reads as zeros alone; the rest is written in place.
func (e *sparse) writeOldGrain(c *chunk, gp grainPart) error {
	gte := c.tbl[gp.i]
	st := e.state(gte)
	switch {
	case c.zero && gp.whole && e.zeroGrain && (c.mode == modeZero || st != grainData):
		if st != grainZero {
			c.tbl[gp.i] = gteZeroed
			c.changed(gp.i)
		}
	case c.zero && st != grainData:
		// Already reads as zeros.
	default:
		return e.writeGrainInPlace(c, gp, gte)
	}
	return nil
}

// writeGrainInPlace writes the chunk's data (or zeros) for part gp to the
// allocated grain gte points at.
func (e *sparse) writeGrainInPlace(c *chunk, gp grainPart, gte uint32) error {
	if err := e.dataGTE(gte); err != nil {
		return err
	}
	var src []byte
	if c.zero {
		if c.zeros == nil {
			c.zeros = make([]byte, e.grainBytes)
		}
		src = c.zeros[:gp.hi-gp.lo]
	} else {
		src = c.p[gp.lo-c.off : gp.hi-c.off]
	}
	if _, err := e.f.WriteAt(src, int64(gte)*sectorSize+gp.lo-gp.gstart); err != nil {
		return fmt.Errorf("%s: writing a grain: %w", e.name, err)
	}
	return nil
}

// buildNewGrain builds the chunk's next new grain in memory for part gp:
// the rest of the grain from the parent when it shows through, the data
// (or zeros) on top; and points the GTE at where it will be written.
func (e *sparse) buildNewGrain(c *chunk, gp grainPart) error {
	g0 := c.newData[c.k*e.grainBytes : (c.k+1)*e.grainBytes]
	if !gp.whole && e.state(c.tbl[gp.i]) == grainUnalloc && c.parent != nil {
		// Copy on write: the rest of the grain comes from the
		// parent (within the extent's capacity; the tail past it
		// stays zero).
		if err := c.parent(g0[:min(e.grainBytes, e.size-gp.gstart)], gp.gstart); err != nil {
			return err
		}
	}
	if c.zero {
		clear(g0[gp.lo-gp.gstart : gp.hi-gp.gstart])
	} else {
		copy(g0[gp.lo-gp.gstart:], c.p[gp.lo-c.off:gp.hi-c.off])
	}
	c.tbl[gp.i] = uint32(c.newSector + c.k*int64(e.h.grainSize))
	c.changed(gp.i)
	c.k++
	return nil
}

// appendGrains writes the n new grains in data at sector, the end of the
// file, in one request.
func (e *sparse) appendGrains(data []byte, sector, n int64) error {
	if len(data) == 0 {
		return nil
	}
	if _, err := e.f.WriteAt(data, sector*sectorSize); err != nil {
		return fmt.Errorf("%s: writing new grains: %w", e.name, err)
	}
	e.next += n * int64(e.h.grainSize)
	e.fileSize = max(e.fileSize, e.next*sectorSize)
	return nil
}

// whole reports whether [off, end) covers grain g entirely (up to the
// extent's end, for a last grain cut short by the capacity).
func (e *sparse) whole(g, off, end int64) bool {
	gstart := g * e.grainBytes
	return off <= gstart && end >= min(gstart+e.grainBytes, e.size)
}

// needsGrain reports whether a write to a grain whose GTE is gte needs a
// new grain: it is not allocated, and the write is data or zeros that would
// otherwise not read back as zeros (a partial zero of a grain whose parent
// shows through, or any zero of one without zeroed-grain GTEs).
func (e *sparse) needsGrain(gte uint32, zero, whole, hasParent bool) bool {
	st := e.state(gte)
	if st == grainData {
		return false
	}
	if !zero {
		return true
	}
	if st == grainZero || !hasParent {
		return false
	}
	return !(whole && e.zeroGrain)
}
