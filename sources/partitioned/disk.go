package partitioned

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/nbdloop/nbdloop/sources"
)

// Disk is a virtual disk built from files, one partition per file, with a
// partition table that nbdloop synthesizes: the Source behind
// `nbdloop attach --partitions boot.img swap.img root.img`. It follows the
// layout of nbdkit's partitioning plugin (formats.md section 6) on a
// sources.Regions.
//
// GPT (the default): a protective MBR, the primary header and entry array,
// the partitions, then the backup entry array and header at the very end;
// both headers and the entry array carry correct CRC32s. The entry array
// has 128 entries, or more when there are more partitions (rounded up to a
// multiple of 128), as nbdkit does. The disk GUID is derived from the
// inputs (each part's ID, size and type, the table options), so attaching
// the same files the same way gives the same GUID; each partition's unique
// GUID is derived from its number and its part's ID, so that PARTUUID=
// references survive a detach and attach, and two partitions never share
// one. Partition names are the parts' names.
//
// MBR (Options.Table "mbr"): up to four primary partitions; with more than
// four parts, the first three are primary, the fourth entry is an extended
// partition (type 0x0f) and each further part is a logical partition
// preceded by its own EBR, numbered from 5 as Linux does. The first
// partition is marked bootable. Every address must fit in 32 bits: with
// 512-byte sectors the disk can be 2 TiB at most (ErrTooLarge).
//
// Each partition starts at a multiple of Options.Align (1 MiB by default)
// and ends on a sector boundary: the part's last partial sector, if any, is
// padded with zeros. The partition type comes from Part.Type, or is
// detected from the part's first bytes (see Detect and TypeFor).
//
// Reads of the tables and of the padding come from memory. Writes to the
// partitions go to the parts. Writes to the tables are refused with EIO
// unless they carry the bytes already there (a tool that rewrites the same
// table succeeds), and writes to the padding unless they are zeros, as in
// nbdkit; a refused request writes nothing (see sources.Regions). A
// read-only part makes its partition read-only: writes to it fail with
// EPERM. When every part is read-only, so is the disk.
//
// Limits: at most 65536 partitions (Linux shows at most 255 of them, and
// only when the device allows partitions: nbd's max_part); the layout is
// fixed at New, and the parts must keep their size. The table cannot be
// changed through the device.
//
// Example, the paper's disk of a boot, a swap and a root file system:
//
//	d, err := partitioned.New([]partitioned.Part{
//		{Source: boot, Name: "boot"}, {Source: swap, Name: "swap"}, {Source: root, Name: "root"},
//	}, partitioned.Options{})
type Disk struct {
	r          *sources.Regions
	table      string
	sectorSize int64
	guid       GUID
	diskID     uint32
	parts      []Partition
	extended   *Partition
}

// Part is one partition-to-be of New.
type Part struct {
	// Source holds the partition's bytes. Its size need not be a multiple
	// of the sector size.
	Source sources.Source
	// Name is the GPT partition name (cut to 36 UTF-16 code units); it
	// also names the part in errors.
	Name string
	// ID identifies the part in the derived GUIDs, such as the file's
	// absolute path; "" means Name.
	ID string
	// Type is the partition type; nil means detect it from the content.
	Type *PartType
}

// Options are the options of New. The zero value builds a GPT disk with
// 512-byte sectors and 1 MiB alignment.
type Options struct {
	// Table is "gpt" (or "") or "mbr".
	Table string
	// Align is where partitions start: a power of two from the sector
	// size to 1 GiB; 0 means DefaultAlign.
	Align int64
	// SectorSize is the logical sector size the tables are written for:
	// 512 (or 0), 1024, 2048 or 4096. It must match the device's.
	SectorSize int64
	// ESP makes detected FAT file systems EFI system partitions instead
	// of Microsoft basic data ones.
	ESP bool
}

// DefaultAlign is the default partition alignment, 1 MiB, as fdisk,
// sgdisk and nbdkit use.
const DefaultAlign = 1 << 20

// MaxAlign is the largest alignment New accepts.
const MaxAlign = 1 << 30

// ErrTooLarge is returned by New when an MBR cannot address the disk.
var ErrTooLarge = errors.New("the disk is too large for an MBR")

// Partition describes one partition, of a Disk or of a table read by Read.
type Partition struct {
	// Number is the partition's number as Linux names it (/dev/nbd0p3 is
	// 3): the GPT entry's index plus 1, MBR primaries 1-4, logicals from 5.
	Number int
	// Start and Size are in bytes; a Disk's partitions are whole sectors.
	Start, Size int64
	Type        PartType
	// GUID is the unique partition GUID (GPT only).
	GUID GUID
	// Name is the GPT partition name.
	Name string
	// Content is what Detect found in the part (Disk only).
	Content string
	// ReadOnly is set for a Disk's partitions whose part is read-only.
	ReadOnly bool
}

// End returns the offset just past the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// New builds the disk. Closing it closes every part; on error, the parts
// are left open.
func New(parts []Part, opts Options) (*Disk, error) {
	if opts.Table == "" {
		opts.Table = "gpt"
	}
	if opts.SectorSize == 0 {
		opts.SectorSize = 512
	}
	if opts.Align == 0 {
		opts.Align = DefaultAlign
	}
	ss := opts.SectorSize
	switch {
	case opts.Table != "gpt" && opts.Table != "mbr":
		return nil, fmt.Errorf("unknown partition table %q (use gpt or mbr)", opts.Table)
	case ss != 512 && ss != 1024 && ss != 2048 && ss != 4096:
		return nil, fmt.Errorf("sector size %d is not 512, 1024, 2048 or 4096", ss)
	case opts.Align < ss || opts.Align > MaxAlign || opts.Align&(opts.Align-1) != 0:
		return nil, fmt.Errorf("alignment %d is not a power of two from the sector size (%d) to 1 GiB", opts.Align, ss)
	case len(parts) == 0:
		return nil, fmt.Errorf("no partitions: %w", sources.ErrEmpty)
	case len(parts) > gptMaxEntries:
		return nil, fmt.Errorf("%d partitions, nbdloop builds at most %d", len(parts), gptMaxEntries)
	}

	d := &Disk{table: opts.Table, sectorSize: ss}
	for _, p := range parts {
		if p.Source.Size() == 0 {
			return nil, fmt.Errorf("%s: %w", p.Name, sources.ErrEmpty)
		}
		pt := Partition{Name: p.Name, ReadOnly: p.Source.Caps().ReadOnly}
		if p.Type != nil {
			pt.Type = *p.Type
		} else {
			content, fat, err := Detect(p.Source, p.Source.Size())
			if err != nil {
				return nil, fmt.Errorf("%s: detecting its content: %w", p.Name, err)
			}
			pt.Content = content
			pt.Type = TypeFor(content, fat, opts.ESP)
		}
		if opts.Table == "gpt" && pt.Type.GUID.IsZero() {
			return nil, fmt.Errorf("%s: partition type %s has no GPT type GUID (give a type name or a GUID)", p.Name, pt.Type)
		}
		if opts.Table == "mbr" && pt.Type.MBR == 0 {
			return nil, fmt.Errorf("%s: partition type %s has no MBR ID (give a type name or an ID such as 0x83)", p.Name, pt.Type)
		}
		d.parts = append(d.parts, pt)
	}

	seed := d.seed(parts, opts)
	d.guid = nameGUID("disk\x00" + seed)
	id := nameGUID("mbr\x00" + seed)
	d.diskID = binary.LittleEndian.Uint32(id[:])
	if d.diskID == 0 {
		d.diskID = 1
	}
	var l sources.Layout
	var err error
	if opts.Table == "gpt" {
		err = d.layoutGPT(&l, parts, opts)
	} else {
		err = d.layoutMBR(&l, parts, opts)
	}
	if err != nil {
		return nil, err
	}
	d.r, err = sources.NewRegions(l.Regions())
	if err != nil {
		return nil, err
	}
	return d, nil
}

// seed is the text the disk's GUID and MBR signature derive from.
func (d *Disk) seed(parts []Part, opts Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\x00%d\x00%d\x00", opts.Table, opts.SectorSize, opts.Align)
	for i, p := range parts {
		fmt.Fprintf(&b, "%s\x00%d\x00%s\x00", partID(p), p.Source.Size(), d.parts[i].Type)
	}
	return b.String()
}

func partID(p Part) string {
	if p.ID != "" {
		return p.ID
	}
	return p.Name
}

// addPart appends part i at the alignment, padded to a whole sector, and
// records where it went.
func (d *Disk) addPart(l *sources.Layout, i int, p Part, align int64) {
	start := l.AlignTo(align)
	name := p.Name
	if name == "" {
		name = fmt.Sprintf("partition %d", d.parts[i].Number)
	}
	l.AddSource(name, p.Source, p.Source.Size())
	end := l.AlignTo(d.sectorSize)
	d.parts[i].Start, d.parts[i].Size = start, end-start
}

func (d *Disk) layoutGPT(l *sources.Layout, parts []Part, opts Options) error {
	ss := d.sectorSize
	nEntries := (len(parts) + gptMinEntries - 1) / gptMinEntries * gptMinEntries
	pta := make([]byte, (int64(nEntries)*gptEntrySize+ss-1)/ss*ss)
	ptaSectors := int64(len(pta)) / ss
	pmbr, primary, backup := make([]byte, ss), make([]byte, ss), make([]byte, ss)
	l.AddData("protective MBR", pmbr)
	l.AddData("GPT header", primary)
	l.AddData("GPT partition entries", pta)
	for i, p := range parts {
		d.parts[i].Number = i + 1
		d.parts[i].GUID = nameGUID(fmt.Sprintf("partition\x00%d\x00%s", i+1, partID(p)))
		d.addPart(l, i, p, opts.Align)
	}
	backupPTA := l.AddData("backup GPT partition entries", pta)
	l.AddData("backup GPT header", backup)
	total := uint64(l.End() / ss)

	for i, pt := range d.parts {
		gptEntry{
			Type:     pt.Type.GUID,
			GUID:     pt.GUID,
			FirstLBA: uint64(pt.Start / ss),
			LastLBA:  uint64(pt.End()/ss) - 1,
			Name:     pt.Name,
		}.marshal(pta[i*gptEntrySize:])
	}
	h := gptHeader{
		CurrentLBA:  1,
		BackupLBA:   total - 1,
		FirstUsable: uint64(2 + ptaSectors),
		LastUsable:  total - 2 - uint64(ptaSectors),
		DiskGUID:    d.guid,
		EntriesLBA:  2,
		NumEntries:  uint32(nEntries),
		EntrySize:   gptEntrySize,
		EntriesCRC:  crc32.ChecksumIEEE(pta[:nEntries*gptEntrySize]),
	}
	h.marshal(primary)
	h.CurrentLBA, h.BackupLBA, h.EntriesLBA = total-1, 1, uint64(backupPTA/ss)
	h.marshal(backup)

	// The protective MBR covers the whole disk, or as much of it as 32
	// bits can say.
	count := min(total-1, 0xffffffff)
	mbrEntry{Type: mbrProtective, Start: 1, Count: uint32(count)}.marshal(pmbr[mbrEntries:])
	pmbr[mbrSignature], pmbr[mbrSignature+1] = 0x55, 0xaa
	return nil
}

func (d *Disk) layoutMBR(l *sources.Layout, parts []Part, opts Options) error {
	ss := d.sectorSize
	mbr := make([]byte, ss)
	l.AddData("MBR", mbr)
	logical := len(parts) > 4
	ebrs := make([]int64, len(parts)) // byte offsets of the EBRs, for logicals
	var ebrData [][]byte
	for i, p := range parts {
		if logical && i >= 3 {
			b := make([]byte, ss)
			ebrs[i] = l.AddData("EBR", b)
			ebrData = append(ebrData, b)
			d.parts[i].Number = i + 2 // 5, 6, ...: 4 is the extended partition
		} else {
			d.parts[i].Number = i + 1
		}
		d.addPart(l, i, p, opts.Align)
	}
	total := l.End() / ss
	if total > mbrMaxSectors {
		return fmt.Errorf("%w: %d bytes, and an MBR with %d-byte sectors addresses at most %d bytes (use a GPT)",
			ErrTooLarge, l.End(), ss, mbrMaxSectors*ss)
	}
	lba := func(off int64) uint32 { return uint32(off / ss) }
	entry := func(pt Partition, base int64) mbrEntry {
		return mbrEntry{Type: pt.Type.MBR, Start: lba(pt.Start - base), Count: lba(pt.Size)}
	}
	for i, pt := range d.parts {
		if logical && i >= 3 {
			break
		}
		e := entry(pt, 0)
		if i == 0 {
			e.Boot = mbrBootable
		}
		e.marshal(mbr[mbrEntries+i*mbrEntryLen:])
	}
	if logical {
		extStart := ebrs[3]
		ext := mbrEntry{Type: mbrExtendedLBA, Start: lba(extStart), Count: uint32(total - extStart/ss)}
		ext.marshal(mbr[mbrEntries+3*mbrEntryLen:])
		d.extended = &Partition{Number: 4, Start: extStart, Size: l.End() - extStart, Type: typeOfMBR(mbrExtendedLBA)}
		for k, b := range ebrData {
			i := k + 3
			entry(d.parts[i], ebrs[i]).marshal(b[mbrEntries:])
			if i+1 < len(parts) {
				next := ebrs[i+1]
				link := mbrEntry{Type: mbrExtended, Start: lba(next - extStart), Count: lba(d.parts[i+1].End() - next)}
				link.marshal(b[mbrEntries+mbrEntryLen:])
			}
			b[mbrSignature], b[mbrSignature+1] = 0x55, 0xaa
		}
	}
	binary.LittleEndian.PutUint32(mbr[mbrDiskID:], d.diskID)
	mbr[mbrSignature], mbr[mbrSignature+1] = 0x55, 0xaa
	return nil
}

// Table returns "gpt" or "mbr".
func (d *Disk) Table() string { return d.table }

// GUID returns the GPT disk GUID (derived from the inputs).
func (d *Disk) GUID() GUID { return d.guid }

// DiskID returns the MBR disk signature (derived from the inputs).
func (d *Disk) DiskID() uint32 { return d.diskID }

// Partitions returns the partitions, one per part, in order.
func (d *Disk) Partitions() []Partition { return append([]Partition(nil), d.parts...) }

// Extended returns the MBR's extended partition, or nil when there is none.
func (d *Disk) Extended() *Partition { return d.extended }

// Regions returns the layout.
func (d *Disk) Regions() []sources.Region { return d.r.Regions() }

// Size returns the disk's size: the end of the backup GPT header, or of the
// last partition with MBR.
func (d *Disk) Size() int64 { return d.r.Size() }

// Caps returns the parts' combined capabilities (see sources.Regions).
func (d *Disk) Caps() sources.Caps { return d.r.Caps() }

// ReadAt reads the tables from memory and the partitions from the parts.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) { return d.r.ReadAt(p, off) }

// WriteAt writes to the parts; see Disk for writes to the tables.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) { return d.r.WriteAt(p, off) }

// Flush flushes the parts written since their last flush.
func (d *Disk) Flush() error { return d.r.Flush() }

// Trim trims the parts the range covers.
func (d *Disk) Trim(off, length int64) error { return d.r.Trim(off, length) }

// Zero zeros the parts the range covers; tables in the range must be zeros.
func (d *Disk) Zero(off, length int64, mayTrim bool) error { return d.r.Zero(off, length, mayTrim) }

// Close closes every part. A second Close returns nil.
func (d *Disk) Close() error { return d.r.Close() }

// Extents reports the files' extents where they lie in the disk, the
// partition tables as data and the padding as holes.
func (d *Disk) Extents(off, length int64, fn func(sources.Extent) bool) error {
	return d.r.Extents(off, length, fn)
}
