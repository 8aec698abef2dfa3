package partitioned

import "encoding/binary"

// MBR on-disk layout: four 16-byte entries at 0x1be, the signature 55 AA at
// 0x1fe, and a 32-bit disk signature at 0x1b8. Extended boot records (EBRs)
// have the same shape; their first entry is a logical partition, relative
// to the EBR, and their second links to the next EBR, relative to the start
// of the extended partition.
const (
	mbrEntries      = 0x1be
	mbrEntryLen     = 16
	mbrSignature    = 0x1fe
	mbrDiskID       = 0x1b8
	mbrBootable     = 0x80
	mbrMaxSectors   = 1 << 32 // every LBA and count is 32 bits
	chsHeads        = 255
	chsSectors      = 63
	chsMaxCylinders = 1024
)

// mbrEntry is one partition entry of an MBR or EBR.
type mbrEntry struct {
	Boot  byte
	Type  byte
	Start uint32 // LBA
	Count uint32 // sectors
}

// marshal writes the entry into b (16 bytes), with CHS addresses computed
// for the usual 255 heads and 63 sectors per track, and the "too large"
// address 1023/254/63 beyond what CHS can reach, as fdisk does.
func (e mbrEntry) marshal(b []byte) {
	b[0] = e.Boot
	copy(b[1:4], chs(uint64(e.Start)))
	b[4] = e.Type
	copy(b[5:8], chs(uint64(e.Start)+uint64(e.Count)-1))
	binary.LittleEndian.PutUint32(b[8:], e.Start)
	binary.LittleEndian.PutUint32(b[12:], e.Count)
}

func parseMBREntry(b []byte) mbrEntry {
	return mbrEntry{
		Boot:  b[0],
		Type:  b[4],
		Start: binary.LittleEndian.Uint32(b[8:]),
		Count: binary.LittleEndian.Uint32(b[12:]),
	}
}

// chs returns the 3-byte CHS address of lba: head, sector (bits 0-5) with
// the cylinder's bits 8-9 (bits 6-7), cylinder bits 0-7.
func chs(lba uint64) []byte {
	c := lba / (chsHeads * chsSectors)
	if c >= chsMaxCylinders {
		return []byte{0xfe, 0xff, 0xff}
	}
	h := lba / chsSectors % chsHeads
	s := lba%chsSectors + 1
	return []byte{byte(h), byte(s) | byte(c>>8)<<6, byte(c)}
}

// hasSignature reports whether sector ends in 55 AA.
func hasSignature(sector []byte) bool {
	return len(sector) >= 512 && sector[mbrSignature] == 0x55 && sector[mbrSignature+1] == 0xaa
}

// entries returns the four entries of an MBR or EBR.
func entries(sector []byte) [4]mbrEntry {
	var es [4]mbrEntry
	for i := range es {
		es[i] = parseMBREntry(sector[mbrEntries+i*mbrEntryLen:])
	}
	return es
}

func isExtended(t byte) bool {
	return t == mbrExtended || t == mbrExtendedLBA || t == mbrLinuxExt
}
