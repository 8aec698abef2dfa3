package partitioned

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

var linuxType = MustParseGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")

// hostileGPT returns a disk of sectors 512-byte sectors with a protective
// MBR and a primary and backup GPT whose header and entries edit may
// change before the CRCs are computed; the entry array holds numEntries
// 128-byte entries, entry 0 a Linux partition from LBA 40 to 47.
func hostileGPT(sectors int64, numEntries uint32, edit func(h *gptHeader, entries []gptEntry)) []byte {
	const ss = 512
	b := make([]byte, sectors*ss)
	mbrEntry{Type: mbrProtective, Start: 1, Count: uint32(min(sectors-1, math.MaxUint32))}.marshal(b[mbrEntries:])
	b[mbrSignature], b[mbrSignature+1] = 0x55, 0xaa
	entries := make([]gptEntry, numEntries)
	entries[0] = gptEntry{Type: linuxType, GUID: nameGUID("p1"), FirstLBA: 40, LastLBA: 47, Name: "p1"}
	arraySectors := (int64(numEntries)*gptEntrySize + ss - 1) / ss
	h := gptHeader{CurrentLBA: 1, BackupLBA: uint64(sectors - 1), FirstUsable: uint64(2 + arraySectors), LastUsable: uint64(sectors - 2 - arraySectors),
		DiskGUID: nameGUID("disk"), EntriesLBA: 2, NumEntries: numEntries, EntrySize: gptEntrySize}
	if edit != nil {
		edit(&h, entries)
	}
	array := make([]byte, arraySectors*ss)
	for i, e := range entries {
		e.marshal(array[i*gptEntrySize:])
	}
	h.EntriesCRC = crc32.ChecksumIEEE(array[:min(int64(len(array)), int64(h.NumEntries)*int64(h.EntrySize))])
	for _, at := range []struct{ hdr, arr uint64 }{{1, 2}, {uint64(sectors - 1), uint64(sectors - 1 - arraySectors)}} {
		copy(b[at.arr*ss:], array)
		hh := h
		if at.hdr != 1 {
			hh.CurrentLBA, hh.BackupLBA, hh.EntriesLBA = at.hdr, h.CurrentLBA, at.arr
		}
		hh.marshal(b[at.hdr*ss : (at.hdr+1)*ss])
	}
	return b
}

// hostileMBR returns a disk of sectors 512-byte sectors with the four MBR
// entries given, and EBRs: ebrs[lba] are the entries of the EBR at lba.
func hostileMBR(sectors int64, primary []mbrEntry, ebrs map[int64][]mbrEntry) []byte {
	b := make([]byte, sectors*512)
	put := func(at int64, es []mbrEntry) {
		s := b[at*512 : (at+1)*512]
		for i, e := range es {
			o := s[mbrEntries+i*mbrEntryLen:]
			o[4] = e.Type
			binary.LittleEndian.PutUint32(o[8:], e.Start)
			binary.LittleEndian.PutUint32(o[12:], e.Count)
		}
		s[mbrSignature], s[mbrSignature+1] = 0x55, 0xaa
	}
	put(0, primary)
	for lba, es := range ebrs {
		put(lba, es)
	}
	return b
}

// TestHostilePartitions reads hostile GPT and MBR tables: each is refused
// with a one-line error, or read, with the partition asked for served
// from the right bytes or refused; at most 64 MiB allocated, nothing
// outside the image's directory touched.
func TestHostilePartitions(t *testing.T) {
	const budget = 64 << 20
	o := imagetest.NewOutside(t)
	const linux = 0x83
	// A chain of EBRs that goes deeper than Read follows: EBR k at LBA
	// 100+k links to EBR k+1.
	deep := map[int64][]mbrEntry{}
	for k := int64(0); k < 3000; k++ {
		deep[100+k] = []mbrEntry{{Type: linux, Start: 0, Count: 0}, {Type: mbrExtended, Start: uint32(k + 1), Count: 1}}
	}
	deep[100][0].Count = 0
	tests := []struct {
		name      string
		disk      []byte
		part      int
		wantErr   string // from OpenPartition
		wantStart int64  // else the partition's start, in bytes
		wantSize  int64
		wantWarn  string
	}{
		{name: "gpt: good", disk: hostileGPT(128, 128, nil), part: 1, wantStart: 40 * 512, wantSize: 8 * 512},
		{name: "gpt: 65536 entries of 4096 bytes (256 MiB)", disk: hostileGPT(128, 128, func(h *gptHeader, _ []gptEntry) { h.NumEntries, h.EntrySize = 65536, 4096 }),
			part: 1, wantErr: "entry array of 268435456 bytes"},
		{name: "gpt: 2^32-1 entries", disk: hostileGPT(128, 128, func(h *gptHeader, _ []gptEntry) { h.NumEntries = math.MaxUint32 }),
			part: 1, wantErr: "4294967295 entries"},
		{name: "gpt: entry size 2^32-8", disk: hostileGPT(128, 128, func(h *gptHeader, _ []gptEntry) { h.EntrySize = math.MaxUint32 - 7 }),
			part: 1, wantErr: "entry size 4294967288"},
		{name: "gpt: entries at LBA 2^64-1", disk: hostileGPT(128, 128, func(h *gptHeader, _ []gptEntry) { h.EntriesLBA = math.MaxUint64 }),
			part: 1, wantStart: 40 * 512, wantSize: 8 * 512, wantWarn: "entry array at LBA 18446744073709551615 does not fit on the disk"},
		{name: "gpt: entries at the last LBA, running past the disk", disk: hostileGPT(128, 128, func(h *gptHeader, _ []gptEntry) { h.EntriesLBA = 127 }),
			part: 1, wantStart: 40 * 512, wantSize: 8 * 512, wantWarn: "entry array at LBA 127 does not fit on the disk"},
		{name: "gpt: header says it is at LBA 2^64-1", disk: hostileGPT(128, 128, func(h *gptHeader, _ []gptEntry) { h.CurrentLBA = math.MaxUint64 }),
			part: 1, wantStart: 40 * 512, wantSize: 8 * 512, wantWarn: "it says it is at LBA 18446744073709551615"},
		{name: "gpt: header size 2^32-1", disk: hostileGPT(128, 128, func(h *gptHeader, _ []gptEntry) {}), part: 1, wantStart: 40 * 512, wantSize: 8 * 512},
		{name: "gpt: partition at LBA 2^64-2 to 2^64-1", disk: hostileGPT(128, 128, func(_ *gptHeader, e []gptEntry) { e[0].FirstLBA, e[0].LastLBA = math.MaxUint64-1, math.MaxUint64 }),
			part: 1, wantErr: "no partition 1: the GPT table is empty"},
		{name: "gpt: partition ending at the largest byte offset", disk: hostileGPT(128, 128, func(_ *gptHeader, e []gptEntry) { e[0].LastLBA = 1<<63/512 - 2 }),
			part: 1, wantErr: "reaches past the end of the disk"},
		{name: "gpt: partition whose byte end overflows", disk: hostileGPT(128, 128, func(_ *gptHeader, e []gptEntry) { e[0].FirstLBA, e[0].LastLBA = 1<<55, 1<<55+1 }),
			part: 1, wantErr: "no partition 1"},
		{name: "gpt: partition ending before it starts", disk: hostileGPT(128, 128, func(_ *gptHeader, e []gptEntry) { e[0].FirstLBA, e[0].LastLBA = 50, 40 }),
			part: 1, wantErr: "no partition 1"},
		{name: "gpt: partition past the end of the disk", disk: hostileGPT(128, 128, func(_ *gptHeader, e []gptEntry) { e[0].LastLBA = 1 << 40 }),
			part: 1, wantErr: "reaches past the end of the disk"},
		{name: "gpt: partition over the table", disk: hostileGPT(128, 128, func(_ *gptHeader, e []gptEntry) { e[0].FirstLBA = 0 }),
			part: 1, wantStart: 0, wantSize: 48 * 512, wantWarn: "overlaps the partition table"},
		{name: "gpt: overlapping partitions", disk: hostileGPT(128, 128, func(_ *gptHeader, e []gptEntry) {
			e[1] = gptEntry{Type: linuxType, FirstLBA: 44, LastLBA: 60}
		}), part: 2, wantStart: 44 * 512, wantSize: 17 * 512, wantWarn: "partition 2 (bytes 22528 to 31232) overlaps partition 1"},
		{name: "gpt: 65536 partitions (an 8 MiB entry array)", disk: hostileGPT(16500+2*(65536*128/512), 65536, func(_ *gptHeader, e []gptEntry) {
			for i := range e {
				e[i] = gptEntry{Type: linuxType, FirstLBA: uint64(16500 + i/4), LastLBA: uint64(16500 + i/4)}
			}
		}), part: 70000, wantErr: "the GPT table has 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, ... (65536 partitions)"},
		{name: "gpt: primary header CRC wrong, backup good", disk: func() []byte {
			b := hostileGPT(128, 128, nil)
			b[512+16] ^= 1
			return b
		}(), part: 1, wantStart: 40 * 512, wantSize: 8 * 512, wantWarn: "the primary GPT is damaged"},
		{name: "gpt: both header CRCs wrong", disk: func() []byte {
			b := hostileGPT(128, 128, nil)
			b[512+16] ^= 1
			b[127*512+16] ^= 1
			return b
		}(), part: 1, wantErr: "header CRC32"},
		{name: "gpt: entry array CRC wrong in both", disk: func() []byte {
			b := hostileGPT(128, 128, nil)
			b[2*512+100] ^= 1
			b[(127-32)*512+100] ^= 1
			return b
		}(), part: 1, wantErr: "entry array CRC32"},
		{name: "gpt: backup LBA 2^64-1 and primary damaged", disk: func() []byte {
			b := hostileGPT(128, 128, func(h *gptHeader, _ []gptEntry) { h.BackupLBA = math.MaxUint64 })
			b[127*512] = 0 // no backup at the last LBA either
			b[512+20] ^= 1 // reserved field: CRC mismatch
			return b
		}(), part: 1, wantErr: "header CRC32"},
		{name: "mbr: partition at LBA 2^32-1 of 2^32-1 sectors", disk: hostileMBR(64, []mbrEntry{{Type: linux, Start: math.MaxUint32, Count: math.MaxUint32}}, nil),
			part: 1, wantErr: "reaches past the end of the disk"},
		{name: "mbr: overlapping primaries and one over the MBR", disk: hostileMBR(64, []mbrEntry{{Type: linux, Start: 0, Count: 8}, {Type: linux, Start: 4, Count: 8}}, nil),
			part: 2, wantStart: 4 * 512, wantSize: 8 * 512, wantWarn: "overlaps the partition table"},
		{name: "mbr: EBR linking to itself", disk: hostileMBR(64, []mbrEntry{{Type: mbrExtended, Start: 8, Count: 50}},
			map[int64][]mbrEntry{8: {{Type: linux, Start: 2, Count: 4}, {Type: mbrExtended, Start: 0, Count: 1}}}),
			part: 5, wantStart: 10 * 512, wantSize: 4 * 512},
		{name: "mbr: two EBRs linking to each other", disk: hostileMBR(64, []mbrEntry{{Type: mbrExtended, Start: 8, Count: 50}},
			map[int64][]mbrEntry{8: {{Type: linux, Start: 2, Count: 4}, {Type: mbrExtended, Start: 10, Count: 1}}, 18: {{Type: linux, Start: 1, Count: 4}, {Type: mbrExtended, Start: 0, Count: 1}}}),
			part: 6, wantStart: 19 * 512, wantSize: 4 * 512},
		{name: "mbr: EBR chain 3000 deep", disk: hostileMBR(3200, []mbrEntry{{Type: mbrExtended, Start: 100, Count: 3050}}, deep),
			part: 5, wantErr: "the MBR table has 1"},
		{name: "mbr: EBR link past the end of the disk", disk: hostileMBR(64, []mbrEntry{{Type: mbrExtended, Start: 8, Count: 50}},
			map[int64][]mbrEntry{8: {{Type: linux, Start: 2, Count: 4}, {Type: mbrExtended, Start: math.MaxUint32, Count: 1}}}),
			part: 5, wantStart: 10 * 512, wantSize: 4 * 512},
		{name: "mbr: the extended partition asked for", disk: hostileMBR(64, []mbrEntry{{Type: mbrExtended, Start: 8, Count: 50}},
			map[int64][]mbrEntry{8: {{Type: linux, Start: 2, Count: 4}}}),
			part: 1, wantErr: "is the extended partition; it holds the logical partitions 5"},
		{name: "mbr: four EBR entries, three of them logical at 2^32-1", disk: hostileMBR(64, []mbrEntry{{Type: mbrExtended, Start: 8, Count: 50}},
			map[int64][]mbrEntry{8: {{Type: linux, Start: 2, Count: 4}, {Type: linux, Start: math.MaxUint32, Count: math.MaxUint32}, {Type: linux, Start: math.MaxUint32, Count: 1}, {Type: linux, Start: 1, Count: math.MaxUint32}}}),
			part: 7, wantErr: "reaches past the end of the disk"},
	}
	// One case edits the header after marshal: header size 2^32-1.
	for i := range tests {
		if strings.HasPrefix(tests[i].name, "gpt: header size") {
			b := tests[i].disk
			binary.LittleEndian.PutUint32(b[512+12:], math.MaxUint32)
			tests[i].wantErr, tests[i].wantWarn = "", "the primary GPT is damaged (invalid GPT header: header size 4294967295)"
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(o.Dir, "disk.img")
			if err := os.WriteFile(path, tt.disk, 0o644); err != nil {
				t.Fatal(err)
			}
			o.Opened()
			f, err := sources.OpenFile(path, sources.FileOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var w *sources.Window
			var tb *Table
			var got []byte
			alloc := imagetest.Allocated(func() {
				w, _, tb, err = OpenPartition(f, tt.part, 512)
				if err == nil {
					got = make([]byte, w.Size())
					if _, rerr := w.ReadAt(got, 0); rerr != nil {
						t.Errorf("reading the partition: %v", rerr)
					}
				}
			})
			o.Check(t, tt.name)
			t.Logf("allocated %s", bytesize.Words(int64(alloc)))
			if alloc > imagetest.AllocBound(int64(budget)) {
				t.Errorf("OpenPartition allocated %s, over the test's budget of %s", bytesize.Words(int64(alloc)), bytesize.Words(budget))
			}
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("OpenPartition(%d) = a window at %d, want an error with %q", tt.part, w.Size(), tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") || len(err.Error()) > 1000 {
					t.Errorf("OpenPartition(%d) = %q, want one short line with %q", tt.part, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenPartition(%d) = %v", tt.part, err)
			}
			if want := tt.disk[tt.wantStart : tt.wantStart+tt.wantSize]; string(got) != string(want) {
				t.Errorf("partition %d: %d bytes, want bytes %d to %d of the disk", tt.part, len(got), tt.wantStart, tt.wantStart+tt.wantSize)
			}
			warns := strings.Join(tb.Warnings, "\n")
			if tt.wantWarn == "" && warns != "" || !strings.Contains(warns, tt.wantWarn) {
				t.Errorf("Warnings = %q, want %q", tb.Warnings, tt.wantWarn)
			}
		})
	}
}
