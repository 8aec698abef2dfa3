package partitioned

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"unicode/utf16"
)

// GPT on-disk layout (UEFI 2.10, section 5.3). Offsets are in bytes from
// the start of the header or the entry.
const (
	gptSignature  = "EFI PART"
	gptRevision   = 0x00010000 // 1.0
	gptHeaderSize = 92
	gptEntrySize  = 128
	// gptMinEntries is the smallest entry array the specification allows
	// (16 KiB), and the size every tool writes.
	gptMinEntries = 128
	// gptMaxEntries bounds the entry array nbdloop writes and reads (8 MiB
	// of entries); far more than any kernel shows.
	gptMaxEntries = 65536
	gptNameUnits  = 36 // UTF-16 code units in a partition name
)

// gptHeader holds the fields of a GPT header that vary.
type gptHeader struct {
	HeaderSize  uint32
	CurrentLBA  uint64
	BackupLBA   uint64
	FirstUsable uint64
	LastUsable  uint64
	DiskGUID    GUID
	EntriesLBA  uint64
	NumEntries  uint32
	EntrySize   uint32
	EntriesCRC  uint32
}

// marshal writes the header into the first 92 bytes of b, with its CRC32,
// and zeros the rest of b (the remainder of the sector is reserved).
func (h gptHeader) marshal(b []byte) {
	clear(b)
	copy(b[0:], gptSignature)
	le := binary.LittleEndian
	le.PutUint32(b[8:], gptRevision)
	le.PutUint32(b[12:], gptHeaderSize)
	// b[16:20] is the header CRC, computed below with the field zero.
	le.PutUint64(b[24:], h.CurrentLBA)
	le.PutUint64(b[32:], h.BackupLBA)
	le.PutUint64(b[40:], h.FirstUsable)
	le.PutUint64(b[48:], h.LastUsable)
	copy(b[56:], h.DiskGUID[:])
	le.PutUint64(b[72:], h.EntriesLBA)
	le.PutUint32(b[80:], h.NumEntries)
	le.PutUint32(b[84:], h.EntrySize)
	le.PutUint32(b[88:], h.EntriesCRC)
	le.PutUint32(b[16:], crc32.ChecksumIEEE(b[:gptHeaderSize]))
}

// errGPTHeader is wrapped by every reason parseGPTHeader rejects a header.
var errGPTHeader = errors.New("invalid GPT header")

// parseGPTHeader checks and decodes the header in sector (one logical
// sector): signature, size, CRC, and entry geometry. The caller checks the
// LBAs against the disk and the entries' CRC.
func parseGPTHeader(sector []byte) (gptHeader, error) {
	le := binary.LittleEndian
	var h gptHeader
	if len(sector) < gptHeaderSize || string(sector[:8]) != gptSignature {
		return h, fmt.Errorf("%w: no %q signature", errGPTHeader, gptSignature)
	}
	h.HeaderSize = le.Uint32(sector[12:])
	if h.HeaderSize < gptHeaderSize || int(h.HeaderSize) > len(sector) {
		return h, fmt.Errorf("%w: header size %d", errGPTHeader, h.HeaderSize)
	}
	hdr := append([]byte(nil), sector[:h.HeaderSize]...)
	want := le.Uint32(hdr[16:])
	clear(hdr[16:20])
	if got := crc32.ChecksumIEEE(hdr); got != want {
		return h, fmt.Errorf("%w: header CRC32 is %#08x, the header's bytes give %#08x", errGPTHeader, want, got)
	}
	h.CurrentLBA = le.Uint64(hdr[24:])
	h.BackupLBA = le.Uint64(hdr[32:])
	h.FirstUsable = le.Uint64(hdr[40:])
	h.LastUsable = le.Uint64(hdr[48:])
	copy(h.DiskGUID[:], hdr[56:72])
	h.EntriesLBA = le.Uint64(hdr[72:])
	h.NumEntries = le.Uint32(hdr[80:])
	h.EntrySize = le.Uint32(hdr[84:])
	h.EntriesCRC = le.Uint32(hdr[88:])
	if h.EntrySize < gptEntrySize || h.EntrySize%8 != 0 || h.EntrySize > 4096 {
		return h, fmt.Errorf("%w: entry size %d", errGPTHeader, h.EntrySize)
	}
	if h.NumEntries == 0 || h.NumEntries > gptMaxEntries {
		return h, fmt.Errorf("%w: %d entries (nbdloop reads 1 to %d)", errGPTHeader, h.NumEntries, gptMaxEntries)
	}
	if h.FirstUsable > h.LastUsable+1 {
		return h, fmt.Errorf("%w: first usable LBA %d is after the last, %d", errGPTHeader, h.FirstUsable, h.LastUsable)
	}
	return h, nil
}

// gptEntry is one entry of the partition entry array.
type gptEntry struct {
	Type       GUID
	GUID       GUID
	FirstLBA   uint64
	LastLBA    uint64 // inclusive
	Attributes uint64
	Name       string
}

// marshal writes the entry into b (at least 128 bytes).
func (e gptEntry) marshal(b []byte) {
	le := binary.LittleEndian
	copy(b[0:], e.Type[:])
	copy(b[16:], e.GUID[:])
	le.PutUint64(b[32:], e.FirstLBA)
	le.PutUint64(b[40:], e.LastLBA)
	le.PutUint64(b[48:], e.Attributes)
	name := b[56:128]
	clear(name)
	for i, u := range encodeName(e.Name) {
		le.PutUint16(name[2*i:], u)
	}
}

// parseGPTEntryLBAs decodes only an entry's type and LBAs.
func parseGPTEntryLBAs(b []byte) gptEntry {
	var e gptEntry
	copy(e.Type[:], b[0:16])
	e.FirstLBA = binary.LittleEndian.Uint64(b[32:])
	e.LastLBA = binary.LittleEndian.Uint64(b[40:])
	return e
}

func parseGPTEntry(b []byte) gptEntry {
	le := binary.LittleEndian
	var e gptEntry
	copy(e.Type[:], b[0:16])
	copy(e.GUID[:], b[16:32])
	e.FirstLBA = le.Uint64(b[32:])
	e.LastLBA = le.Uint64(b[40:])
	e.Attributes = le.Uint64(b[48:])
	units := make([]uint16, 0, gptNameUnits)
	for i := 0; i < gptNameUnits; i++ {
		u := le.Uint16(b[56+2*i:])
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	e.Name = string(utf16.Decode(units))
	return e
}

// encodeName returns name in UTF-16, cut to the 36 code units an entry
// holds without splitting a surrogate pair. Invalid UTF-8 becomes U+FFFD.
func encodeName(name string) []uint16 {
	var units []uint16
	for _, r := range name {
		n := utf16.RuneLen(r)
		if n < 0 || len(units)+n > gptNameUnits {
			break
		}
		units = utf16.AppendRune(units, r)
	}
	return units
}
