package qcow2

import (
	"encoding/binary"
	"fmt"
)

// parseExtensions walks the header extensions that follow the header
// (v3: at header_length; v2: at 72), up to the backing file name or the end
// of cluster 0. Each step consumes at least 8 bytes, so the walk ends.
func (h *header) parseExtensions(b []byte) error {
	be := binary.BigEndian
	end := int64(len(b))
	if h.backingOffset != 0 && int64(h.backingOffset) < end {
		end = int64(h.backingOffset)
	}
	end = min(end, h.clusterSize())
	for off := int64(h.headerLength); ; {
		if off+8 > end {
			// No end marker: v2 images written by old tools may end the
			// area without one.
			return nil
		}
		typ := be.Uint32(b[off:])
		n := int64(be.Uint32(b[off+4:]))
		off += 8
		if typ == extEnd {
			return nil
		}
		if n > end-off {
			return fmt.Errorf("header extension %#x of %d bytes runs past the header area", typ, n)
		}
		data := b[off : off+n]
		switch typ {
		case extBackingFmt:
			// qemu's limit too (bs->backing_format).
			if len(data) > maxBackingFormat {
				return fmt.Errorf("backing format name of %d bytes, more than %d", len(data), maxBackingFormat)
			}
			h.backingFormat = string(data)
		case extFeatureNames:
			// 48-byte entries: type, bit number, 46-byte name.
			if h.featureNames == nil {
				h.featureNames = map[[2]byte]string{}
			}
			for e := data; len(e) >= 48; e = e[48:] {
				if e[0] > 2 || e[1] > 63 {
					continue // no such feature bit: keep at most 3*64 names
				}
				name := e[2:48]
				for i, c := range name {
					if c == 0 {
						name = name[:i]
						break
					}
				}
				h.featureNames[[2]byte{e[0], e[1]}] = string(name)
			}
		case extExternalData:
			h.externalDataName = string(data[:min(len(data), maxBackingName)])
		}
		off += (n + 7) &^ 7
	}
}

// featureList names the set bits of a feature field (typ 0 incompatible, 1
// compatible, 2 autoclear), with the names of the feature name table where
// it has them.
func (h *header) featureList(typ byte, bits uint64) string {
	s := ""
	for i := 0; i < 64; i++ {
		if bits&(1<<i) == 0 {
			continue
		}
		if s != "" {
			s += ", "
		}
		if name, ok := h.featureNames[[2]byte{typ, byte(i)}]; ok && name != "" {
			s += fmt.Sprintf("bit %d (%q)", i, name)
		} else {
			s += fmt.Sprintf("bit %d", i)
		}
	}
	return s
}
