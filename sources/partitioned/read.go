package partitioned

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/nbdloop/nbdloop/sources"
)

// Table is a partition table read by Read.
type Table struct {
	// Kind is "gpt" or "mbr".
	Kind string
	// SectorSize is the logical sector size the table's LBAs count in.
	SectorSize int64
	// GUID is the GPT disk GUID; DiskID the MBR disk signature.
	GUID   GUID
	DiskID uint32
	// Partitions are in number order. An MBR's extended partition is one
	// of them, with Type.Name "extended".
	Partitions []Partition
	// Warnings say what Read had to work around, such as a damaged
	// primary GPT header replaced by the backup, or partitions that
	// overlap each other or the table.
	Warnings []string
	// meta are the byte ranges of the table's own sectors that Read used.
	meta [][2]int64
}

// Numbers returns the partitions' numbers, as text: "1, 2, 3, 5".
func (t *Table) Numbers() string {
	var s []string
	for _, p := range t.Partitions {
		s = append(s, strconv.Itoa(p.Number))
	}
	return strings.Join(s, ", ")
}

// ErrNoTable is returned by Read for a disk without an MBR or GPT.
var ErrNoTable = errors.New("no partition table (MBR or GPT)")

// maxLogical bounds the EBR chain Read follows (Linux shows at most 255
// partitions in all).
const maxLogical = 1024

// Read reads the partition table of a disk of size bytes, the way Linux
// does (block/partitions/efi.c and msdos.c): a GPT when the MBR has a
// protective (0xEE) entry, or when there is no MBR but a GPT header; the
// MBR's primary and logical partitions otherwise. GPT headers are looked
// for at LBA 1 with sectorSize first, then with the other common size (512
// or 4096); the MBR's LBAs count in sectorSize. A damaged primary GPT
// header or entry array is replaced by the backup, with a warning. GPT
// entries that are unused or end before they start are skipped, as Linux
// skips them; partitions may reach past the end of the disk (OpenPartition
// refuses them).
//
// Read allocates at most 8 MiB (the largest entry array it accepts),
// whatever the input, and follows at most 1024 EBRs.
func Read(r io.ReaderAt, size, sectorSize int64) (*Table, error) {
	if sectorSize != 512 && sectorSize != 1024 && sectorSize != 2048 && sectorSize != 4096 {
		return nil, fmt.Errorf("sector size %d is not 512, 1024, 2048 or 4096", sectorSize)
	}
	if size < 512 {
		return nil, ErrNoTable
	}
	mbr := make([]byte, 512)
	if _, err := readFull(r, mbr, 0); err != nil {
		return nil, err
	}
	haveMBR := hasSignature(mbr)
	t, err := readTable(r, size, sectorSize, mbr, haveMBR)
	if err != nil {
		return nil, err
	}
	t.Warnings = append(t.Warnings, overlaps(t)...)
	return t, nil
}

// readTable is Read once the sector size is checked and the MBR read.
func readTable(r io.ReaderAt, size, sectorSize int64, mbr []byte, haveMBR bool) (*Table, error) {
	protective := false
	if haveMBR {
		for _, e := range entries(mbr) {
			protective = protective || e.Type == mbrProtective
		}
	}
	if protective || !haveMBR {
		sizes := []int64{sectorSize}
		for _, alt := range []int64{512, 4096} {
			if alt != sectorSize {
				sizes = append(sizes, alt)
			}
		}
		// The first damaged GPT found says more than "no GPT" does.
		var damaged error
		for _, ss := range sizes {
			t, err := readGPT(r, size, ss, protective)
			if err == nil {
				return t, nil
			}
			if damaged == nil && !errors.Is(err, errNoGPT) {
				damaged = err
			}
		}
		switch {
		case damaged != nil:
			return nil, damaged
		case !haveMBR:
			return nil, ErrNoTable
		}
		return nil, fmt.Errorf("the MBR is a protective one (type 0xee) but there is no GPT header: %w", errGPTHeader)
	}
	return readMBR(r, size, sectorSize, mbr)
}

// readFull reads len(p) bytes at off, or fails with io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, p []byte, off int64) (int, error) {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

var errNoGPT = errors.New("no GPT header")

// readGPT reads the GPT with sectors of ss bytes: the primary header and
// entries, or the backup ones when those are damaged (or, under a
// protective MBR, missing), as Linux does.
func readGPT(r io.ReaderAt, size, ss int64, protective bool) (*Table, error) {
	total := uint64(size / ss)
	if total < 3 {
		return nil, errNoGPT
	}
	sector := make([]byte, ss)
	if _, err := readFull(r, sector, ss); err != nil {
		return nil, err
	}
	// Without a signature at LBA 1, the backup is worth a look only when
	// the MBR says there is a GPT.
	signed := bytes.HasPrefix(sector, []byte(gptSignature))
	if !signed && !protective {
		return nil, errNoGPT
	}
	t, perr := readGPTAt(r, total, ss, 1)
	if perr == nil {
		return t, nil
	}
	// The backup header is at the last LBA (or where the primary says,
	// if the disk grew since).
	candidates := []uint64{total - 1}
	if h, err := parseGPTHeader(sector); err == nil && h.BackupLBA != total-1 && h.BackupLBA < total {
		candidates = append(candidates, h.BackupLBA)
	}
	for _, lba := range candidates {
		if t, err := readGPTAt(r, total, ss, lba); err == nil {
			t.Warnings = append(t.Warnings, fmt.Sprintf("the primary GPT is damaged (%v); using the backup at LBA %d", perr, lba))
			return t, nil
		}
	}
	if !signed {
		return nil, errNoGPT
	}
	return nil, fmt.Errorf("GPT (%d-byte sectors): %w, and no valid backup", ss, perr)
}

// readGPTAt reads and checks the header at lba and its entry array.
func readGPTAt(r io.ReaderAt, total uint64, ss int64, lba uint64) (*Table, error) {
	sector := make([]byte, ss)
	if _, err := readFull(r, sector, int64(lba)*ss); err != nil {
		return nil, err
	}
	h, err := parseGPTHeader(sector)
	if err != nil {
		return nil, err
	}
	if h.CurrentLBA != lba {
		return nil, fmt.Errorf("%w: it says it is at LBA %d, not %d", errGPTHeader, h.CurrentLBA, lba)
	}
	arrayLen := uint64(h.NumEntries) * uint64(h.EntrySize) // at most 2^16 * 4096
	if arrayLen > 8<<20 {
		return nil, fmt.Errorf("%w: entry array of %d bytes", errGPTHeader, arrayLen)
	}
	if h.EntriesLBA >= total || (total-h.EntriesLBA)*uint64(ss) < arrayLen {
		return nil, fmt.Errorf("%w: entry array at LBA %d does not fit on the disk", errGPTHeader, h.EntriesLBA)
	}
	array := make([]byte, arrayLen)
	if _, err := readFull(r, array, int64(h.EntriesLBA)*ss); err != nil {
		return nil, err
	}
	if got := crc32.ChecksumIEEE(array); got != h.EntriesCRC {
		return nil, fmt.Errorf("%w: entry array CRC32 is %#08x, the entries give %#08x", errGPTHeader, h.EntriesCRC, got)
	}
	t := &Table{Kind: "gpt", SectorSize: ss, GUID: h.DiskGUID, meta: [][2]int64{{0, ss}, {int64(lba) * ss, int64(lba+1) * ss},
		{int64(h.EntriesLBA) * ss, int64(h.EntriesLBA)*ss + int64(arrayLen)}}}
	used := func(e gptEntry) bool {
		return !e.Type.IsZero() && e.LastLBA >= e.FirstLBA && e.LastLBA < 1<<63/uint64(ss)-1
	}
	n := 0
	for i := uint32(0); i < h.NumEntries; i++ {
		if used(parseGPTEntryLBAs(array[uint64(i)*uint64(h.EntrySize):])) {
			n++
		}
	}
	t.Partitions = make([]Partition, 0, n)
	for i := uint32(0); i < h.NumEntries; i++ {
		b := array[uint64(i)*uint64(h.EntrySize):]
		if !used(parseGPTEntryLBAs(b)) {
			continue
		}
		e := parseGPTEntry(b)
		t.Partitions = append(t.Partitions, Partition{
			Number: int(i) + 1,
			Start:  int64(e.FirstLBA) * ss,
			Size:   int64(e.LastLBA-e.FirstLBA+1) * ss,
			Type:   typeOfGUID(e.Type),
			GUID:   e.GUID,
			Name:   e.Name,
		})
	}
	return t, nil
}

// readMBR reads the primary partitions of mbr and the logical ones of its
// extended partition.
func readMBR(r io.ReaderAt, size, ss int64, mbr []byte) (*Table, error) {
	t := &Table{Kind: "mbr", SectorSize: ss, DiskID: uint32(mbr[mbrDiskID]) | uint32(mbr[mbrDiskID+1])<<8 |
		uint32(mbr[mbrDiskID+2])<<16 | uint32(mbr[mbrDiskID+3])<<24, meta: [][2]int64{{0, 512}}}
	var ext *mbrEntry
	for i, e := range entries(mbr) {
		if e.Type == mbrEmpty || e.Count == 0 {
			continue
		}
		t.Partitions = append(t.Partitions, Partition{
			Number: i + 1,
			Start:  int64(e.Start) * ss,
			Size:   int64(e.Count) * ss,
			Type:   typeOfMBR(e.Type),
		})
		if isExtended(e.Type) && ext == nil {
			ext = &e
		}
	}
	if ext == nil {
		return t, nil
	}
	// Follow the EBR chain. Every EBR's logical partition is relative to
	// the EBR; every link is relative to the extended partition's start.
	extStart := int64(ext.Start)
	ebr := extStart
	seen := map[int64]bool{}
	number := 5
	sector := make([]byte, 512)
	for range maxLogical {
		if seen[ebr] || ebr*ss+512 > size {
			break
		}
		seen[ebr] = true
		if _, err := readFull(r, sector, ebr*ss); err != nil {
			return nil, err
		}
		t.meta = append(t.meta, [2]int64{ebr * ss, ebr*ss + 512})
		if !hasSignature(sector) {
			t.Warnings = append(t.Warnings, fmt.Sprintf("the EBR at LBA %d has no 55 AA signature; logical partitions end there", ebr))
			break
		}
		var next *mbrEntry
		for _, e := range entries(sector) {
			switch {
			case e.Type == mbrEmpty || e.Count == 0:
			case isExtended(e.Type):
				if next == nil {
					next = &e
				}
			default:
				t.Partitions = append(t.Partitions, Partition{
					Number: number,
					Start:  (ebr + int64(e.Start)) * ss,
					Size:   int64(e.Count) * ss,
					Type:   typeOfMBR(e.Type),
				})
				number++
			}
		}
		if next == nil {
			break
		}
		ebr = extStart + int64(next.Start)
	}
	slices.SortStableFunc(t.Partitions, func(a, b Partition) int { return a.Number - b.Number })
	return t, nil
}

// overlaps returns a warning for each partition that overlaps another
// (an extended partition and its logical ones aside) or the sectors of the
// table itself (the MBR, the EBRs, the GPT header and entries read), at
// most maxListed of them and then a count. Linux uses such partitions as
// they are, and so does OpenPartition; a write to one changes the other,
// or the table.
func overlaps(t *Table) []string {
	type span struct {
		number     int // 0 for the table's sectors
		start, end int64
	}
	spans := make([]span, 0, len(t.meta)+len(t.Partitions))
	for _, m := range t.meta {
		spans = append(spans, span{0, m[0], m[1]})
	}
	for _, p := range t.Partitions {
		if p.Type.Name != "extended" {
			spans = append(spans, span{p.Number, p.Start, p.End()})
		}
	}
	slices.SortStableFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	var warns []string
	var n int
	var far span // the span that reaches furthest so far
	for i, s := range spans {
		if i > 0 && s.start < far.end && (s.number != 0 || far.number != 0) {
			n++
			if len(warns) < maxListed {
				switch {
				case s.number == 0:
					warns = append(warns, fmt.Sprintf("partition %d (bytes %d to %d) overlaps the partition table: writing to it changes the table", far.number, far.start, far.end))
				case far.number == 0:
					warns = append(warns, fmt.Sprintf("partition %d (bytes %d to %d) overlaps the partition table: writing to it changes the table", s.number, s.start, s.end))
				default:
					warns = append(warns, fmt.Sprintf("partition %d (bytes %d to %d) overlaps partition %d: writing to one changes the other", s.number, s.start, s.end, far.number))
				}
			}
		}
		if i == 0 || s.end > far.end {
			far = s
		}
	}
	if n > len(warns) {
		warns = append(warns, fmt.Sprintf("%d more partitions overlap", n-len(warns)))
	}
	return warns
}

// NoPartitionError is returned by OpenPartition for a number the table
// does not have.
type NoPartitionError struct {
	Number int
	Table  *Table
}

func (e *NoPartitionError) Error() string {
	if len(e.Table.Partitions) == 0 {
		return fmt.Sprintf("no partition %d: the %s table is empty", e.Number, strings.ToUpper(e.Table.Kind))
	}
	return fmt.Sprintf("no partition %d: the %s table has %s", e.Number, strings.ToUpper(e.Table.Kind),
		shortList(e.Table.Partitions, func(Partition) bool { return true }))
}

// maxListed bounds the partition numbers an error message lists.
const maxListed = 32

// shortList prints the numbers of the partitions that keep selects as
// "1, 2, 3", or the first maxListed of them and how many there are in all.
func shortList(parts []Partition, keep func(Partition) bool) string {
	var s []string
	n := 0
	for _, p := range parts {
		if keep(p) {
			if n++; n <= maxListed {
				s = append(s, strconv.Itoa(p.Number))
			}
		}
	}
	if n > maxListed {
		return fmt.Sprintf("%s, ... (%d partitions)", strings.Join(s, ", "), n)
	}
	return strings.Join(s, ", ")
}

// OpenPartition reads disk's partition table (see Read) and returns
// partition number n of it as a Window, with the partition and the table.
// A number the table does not have gives a *NoPartitionError, which lists
// the ones it has; an extended partition, or one that reaches past the end
// of disk, is an error too. Closing the Window closes disk; on error, disk
// is left open.
func OpenPartition(disk sources.Source, n int, sectorSize int64) (*sources.Window, Partition, *Table, error) {
	t, err := Read(disk, disk.Size(), sectorSize)
	if err != nil {
		return nil, Partition{}, nil, err
	}
	for _, p := range t.Partitions {
		if p.Number != n {
			continue
		}
		if p.Type.Name == "extended" {
			logical := shortList(t.Partitions, func(q Partition) bool { return q.Number > 4 })
			return nil, p, t, fmt.Errorf("partition %d is the extended partition; it holds the logical partitions %s", n, logical)
		}
		if p.End() > disk.Size() || p.End() < p.Start {
			return nil, p, t, fmt.Errorf("partition %d (bytes %d to %d) reaches past the end of the disk (%d bytes): the image may be truncated",
				n, p.Start, p.Start+p.Size, disk.Size())
		}
		w, err := sources.NewWindow(disk, p.Start, p.Size)
		return w, p, t, err
	}
	return nil, Partition{}, t, &NoPartitionError{Number: n, Table: t}
}
