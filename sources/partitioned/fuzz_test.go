package partitioned

import (
	"fmt"
	"hash/crc32"
	"math"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// seedDisk returns the bytes of a small disk built by New: the real
// encoder's output, for fuzz seeds.
func seedDisk(f *testing.F, n int, opts Options) []byte {
	f.Helper()
	var parts []Part
	for i := range n {
		parts = append(parts, Part{Source: memPart(f, int64(100+i*300), uint64(i)), Name: fmt.Sprintf("p%d", i)})
	}
	d, err := New(parts, opts)
	if err != nil {
		f.Fatal(err)
	}
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		f.Fatal(err)
	}
	return b
}

// byteDisk is a read-only Source over a byte slice, cheaper to set up per
// fuzz input than a Memory.
type byteDisk []byte

func (b byteDisk) ReadAt(p []byte, off int64) (int, error) {
	if err := sources.CheckRange(off, int64(len(p)), int64(len(b))); err != nil {
		return 0, err
	}
	return copy(p, b[off:]), nil
}
func (b byteDisk) WriteAt(p []byte, off int64) (int, error) { return 0, sources.ErrReadOnly }
func (b byteDisk) Size() int64                              { return int64(len(b)) }
func (b byteDisk) Caps() sources.Caps                       { return sources.Caps{ReadOnly: true, Parallel: true} }
func (b byteDisk) Flush() error                             { return nil }
func (b byteDisk) Trim(off, length int64) error             { return sources.ErrReadOnly }
func (b byteDisk) Zero(off, length int64, mayTrim bool) error {
	return sources.ErrReadOnly
}
func (b byteDisk) Close() error { return nil }

// checkTable reads data as a disk and checks what Read and OpenPartition
// promise for any input: no panic, partitions numbered from 1 with a
// positive size that does not overflow, and windows only for partitions
// that lie inside the disk.
func checkTable(t *testing.T, data []byte, ss int64) {
	disk := byteDisk(data)
	tb, err := Read(disk, disk.Size(), ss)
	if err != nil {
		return
	}
	if tb.Kind != "gpt" && tb.Kind != "mbr" {
		t.Fatalf("Kind = %q", tb.Kind)
	}
	for i, p := range tb.Partitions {
		if p.Number < 1 || p.Size <= 0 || p.Start < 0 || p.End() < p.Start {
			t.Fatalf("partition %+v", p)
		}
		if i >= 2 {
			continue // OpenPartition reads the table again: check a few
		}
		w, q, _, err := OpenPartition(disk, p.Number, ss)
		if err != nil {
			continue
		}
		if q.End() > disk.Size() || w.Size() != q.Size {
			t.Fatalf("OpenPartition(%d) = a window of %d bytes at %d on a disk of %d", p.Number, w.Size(), q.Start, disk.Size())
		}
		b := make([]byte, 1)
		if _, err := w.ReadAt(b, w.Size()-1); err != nil {
			t.Fatalf("reading the last byte of partition %d: %v", p.Number, err)
		}
	}
}

// tinyGPT returns an 8-sector GPT disk with a 4-entry array (one sector),
// made with the encoder's pieces: small inputs fuzz (and minimize) faster
// than the 35 KiB of a disk with the usual 128 entries.
func tinyGPT() []byte {
	const ss = 512
	b := make([]byte, 8*ss)
	mbrEntry{Type: mbrProtective, Start: 1, Count: 7}.marshal(b[mbrEntries:])
	b[mbrSignature], b[mbrSignature+1] = 0x55, 0xaa
	array := b[2*ss : 3*ss]
	gptEntry{Type: MustParseGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4"), GUID: nameGUID("a"), FirstLBA: 3, LastLBA: 3, Name: "a"}.marshal(array)
	gptEntry{Type: MustParseGUID("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"), GUID: nameGUID("b"), FirstLBA: 4, LastLBA: 4, Name: "b"}.marshal(array[3*gptEntrySize:])
	copy(b[5*ss:6*ss], array)
	h := gptHeader{CurrentLBA: 1, BackupLBA: 7, FirstUsable: 3, LastUsable: 4, DiskGUID: nameGUID("disk"),
		EntriesLBA: 2, NumEntries: 4, EntrySize: gptEntrySize, EntriesCRC: crc32.ChecksumIEEE(array)}
	h.marshal(b[ss : 2*ss])
	h.CurrentLBA, h.BackupLBA, h.EntriesLBA = 7, 1, 5
	h.marshal(b[7*ss:])
	return b
}

func FuzzGPT(f *testing.F) {
	// The sector size comes from the input's length, so that the fuzzer
	// has one []byte to mutate: even lengths read with 512-byte sectors,
	// odd ones with 4096 (a 4K GPT is also looked for with 512).
	f.Add(seedDisk(f, 1, Options{Align: 512}))
	f.Add(seedDisk(f, 3, Options{Align: 512}))
	f.Add(append(seedDisk(f, 2, Options{Align: 4096, SectorSize: 4096}), 0))
	f.Add(tinyGPT())
	// Extreme header and entry fields: counts and sizes at 0, 1, max-1,
	// max; LBAs at 0, 1, 2^64-2, 2^64-1 and where sector arithmetic
	// overflows.
	for _, edit := range []func(h *gptHeader, e []gptEntry){
		func(h *gptHeader, _ []gptEntry) { h.NumEntries = math.MaxUint32 },
		func(h *gptHeader, _ []gptEntry) { h.NumEntries = 1 },
		func(h *gptHeader, _ []gptEntry) { h.NumEntries, h.EntrySize = 65536, 4096 },
		func(h *gptHeader, _ []gptEntry) { h.EntrySize = math.MaxUint32 - 7 },
		func(h *gptHeader, _ []gptEntry) { h.EntriesLBA = math.MaxUint64 },
		func(h *gptHeader, _ []gptEntry) { h.EntriesLBA = 0 },
		func(h *gptHeader, _ []gptEntry) { h.CurrentLBA, h.BackupLBA = math.MaxUint64, math.MaxUint64-1 },
		func(h *gptHeader, _ []gptEntry) { h.FirstUsable, h.LastUsable = math.MaxUint64, 0 },
		func(_ *gptHeader, e []gptEntry) { e[0].FirstLBA, e[0].LastLBA = math.MaxUint64-1, math.MaxUint64 },
		func(_ *gptHeader, e []gptEntry) { e[0].FirstLBA, e[0].LastLBA = 0, 1<<63/512-2 },
		func(_ *gptHeader, e []gptEntry) { e[0].FirstLBA, e[0].LastLBA = 1<<55, 1<<55+1 },
		func(_ *gptHeader, e []gptEntry) { e[0].FirstLBA, e[0].LastLBA = 0, 0 },
	} {
		f.Add(hostileGPT(48, 4, edit))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ss := int64(512)
		if len(data)%2 == 1 {
			ss = 4096
		}
		checkTable(t, data, ss)
	})
}

func FuzzMBR(f *testing.F) {
	f.Add(seedDisk(f, 2, Options{Table: "mbr", Align: 512}))
	f.Add(seedDisk(f, 7, Options{Table: "mbr", Align: 512}))
	// Extreme entries: start and count at 0, 1, 2^32-1; EBRs that link
	// to themselves, to each other, past the disk, and a deep chain.
	const linux = 0x83
	f.Add(hostileMBR(16, []mbrEntry{{Type: linux, Start: math.MaxUint32, Count: math.MaxUint32}, {Type: linux, Start: 0, Count: 1}, {Type: linux, Start: 1, Count: math.MaxUint32}}, nil))
	f.Add(hostileMBR(16, []mbrEntry{{Type: mbrExtended, Start: 2, Count: 12}}, map[int64][]mbrEntry{2: {{Type: linux, Start: 1, Count: 2}, {Type: mbrExtended, Start: 0, Count: 1}}}))
	f.Add(hostileMBR(16, []mbrEntry{{Type: mbrExtended, Start: 2, Count: 12}}, map[int64][]mbrEntry{
		2: {{Type: linux, Start: 1, Count: 2}, {Type: mbrExtended, Start: 4, Count: 1}}, 6: {{Type: linux, Start: 1, Count: 2}, {Type: mbrExtended, Start: 0, Count: 1}}}))
	f.Add(hostileMBR(16, []mbrEntry{{Type: mbrExtendedLBA, Start: 2, Count: math.MaxUint32}}, map[int64][]mbrEntry{2: {{Type: linux, Start: math.MaxUint32, Count: 1}, {Type: mbrExtended, Start: math.MaxUint32, Count: math.MaxUint32}}}))
	deep := map[int64][]mbrEntry{}
	for k := int64(0); k < 60; k++ {
		deep[2+k] = []mbrEntry{{Type: linux, Start: 0, Count: 1}, {Type: mbrExtended, Start: uint32(k + 1), Count: 1}}
	}
	f.Add(hostileMBR(64, []mbrEntry{{Type: mbrExtended, Start: 2, Count: 62}}, deep))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkTable(t, data, 512)
	})
}

// TestTinyGPTSeed makes sure the hand-made seed is a valid GPT, so that the
// fuzzer starts from inputs that get past the checks.
func TestTinyGPTSeed(t *testing.T) {
	b := tinyGPT()
	tb, err := Read(byteDisk(b), int64(len(b)), 512)
	if err != nil || len(tb.Partitions) != 2 || tb.Partitions[1].Number != 4 || tb.Partitions[1].Type.Name != "swap" || len(tb.Warnings) != 0 {
		t.Fatalf("Read(tinyGPT()) = %+v, %v; want partitions 1 and 4 (swap)", tb, err)
	}
}
