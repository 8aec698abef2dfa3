package vmdk

import (
	"encoding/binary"
	"fmt"
)

// writeTable writes GTEs [lo, hi) of grain table gdIdx, redundant copy
// first, allocating both tables at the end of the file when the directory
// has none yet (then the directories are written after the tables).
func (e *sparse) writeTable(gdIdx uint32, tbl []uint32, lo, hi int) error {
	raw := make([]byte, len(tbl)*4)
	for i, v := range tbl {
		binary.LittleEndian.PutUint32(raw[i*4:], v)
	}
	if e.gd[gdIdx] == 0 {
		if err := e.newTables(gdIdx, raw); err != nil {
			return err
		}
	} else {
		span := raw[lo*4 : hi*4]
		if e.rgd != nil && e.rgd[gdIdx] != 0 {
			if _, err := e.f.WriteAt(span, int64(e.rgd[gdIdx])*sectorSize+int64(lo)*4); err != nil {
				return fmt.Errorf("%s: writing a redundant grain table: %w", e.name, err)
			}
		}
		if _, err := e.f.WriteAt(span, int64(e.gd[gdIdx])*sectorSize+int64(lo)*4); err != nil {
			return fmt.Errorf("%s: writing a grain table: %w", e.name, err)
		}
	}
	e.cmu.Lock()
	e.storeTable(gdIdx, raw)
	e.cmu.Unlock()
	return nil
}

// newTables appends a grain table (and its redundant copy) holding raw,
// then points the directories at them.
func (e *sparse) newTables(gdIdx uint32, raw []byte) error {
	gts := int64(e.h.gtSectors())
	var rgt int64
	if e.rgd != nil {
		rgt = e.next
		e.next += gts
	}
	gt := e.next
	e.next += gts
	// Keep grains aligned after the tables.
	gs := int64(e.h.grainSize)
	e.next = (e.next + gs - 1) / gs * gs
	tbl := make([]byte, gts*sectorSize)
	copy(tbl, raw)
	if rgt != 0 {
		if _, err := e.f.WriteAt(tbl, rgt*sectorSize); err != nil {
			return fmt.Errorf("%s: writing a new redundant grain table: %w", e.name, err)
		}
	}
	if _, err := e.f.WriteAt(tbl, gt*sectorSize); err != nil {
		return fmt.Errorf("%s: writing a new grain table: %w", e.name, err)
	}
	e.fileSize = max(e.fileSize, (gt+gts)*sectorSize)
	var ent [4]byte
	if rgt != 0 {
		binary.LittleEndian.PutUint32(ent[:], uint32(rgt))
		if _, err := e.f.WriteAt(ent[:], e.rgdOff+int64(gdIdx)*4); err != nil {
			return fmt.Errorf("%s: writing the redundant grain directory: %w", e.name, err)
		}
		e.rgd[gdIdx] = uint32(rgt)
	}
	binary.LittleEndian.PutUint32(ent[:], uint32(gt))
	if _, err := e.f.WriteAt(ent[:], e.gdOff+int64(gdIdx)*4); err != nil {
		return fmt.Errorf("%s: writing the grain directory: %w", e.name, err)
	}
	e.gd[gdIdx] = uint32(gt)
	return nil
}
