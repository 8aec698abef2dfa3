package partitioned

import (
	"fmt"
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

// checkTable reads data as a disk and checks what Read and OpenPartition
// promise for any input: no panic, partitions numbered from 1 with a
// positive size that does not overflow, windows only for partitions that
// lie inside the disk, and the same answer twice.
func checkTable(t *testing.T, data []byte, ss int64) {
	disk, err := sources.NewMemory(max(int64(len(data)), 1))
	if err != nil {
		t.Fatal(err)
	}
	disk.WriteAt(data, 0)
	tb, err := Read(disk, int64(len(data)), ss)
	if err != nil {
		return
	}
	again, err := Read(disk, int64(len(data)), ss)
	if err != nil || fmt.Sprint(again) != fmt.Sprint(tb) {
		t.Fatalf("Read is not deterministic: %+v, then %+v, %v", tb, again, err)
	}
	if tb.Kind != "gpt" && tb.Kind != "mbr" {
		t.Fatalf("Kind = %q", tb.Kind)
	}
	for _, p := range tb.Partitions {
		if p.Number < 1 || p.Size <= 0 || p.Start < 0 || p.End() < p.Start {
			t.Fatalf("partition %+v", p)
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

func FuzzGPT(f *testing.F) {
	f.Add(seedDisk(f, 1, Options{Align: 512}), int64(512))
	f.Add(seedDisk(f, 3, Options{Align: 512}), int64(512))
	f.Add(seedDisk(f, 2, Options{Align: 4096, SectorSize: 4096}), int64(4096))
	f.Add(seedDisk(f, 2, Options{Align: 4096, SectorSize: 4096}), int64(512))
	f.Fuzz(func(t *testing.T, data []byte, ss int64) {
		if ss != 4096 {
			ss = 512
		}
		checkTable(t, data, ss)
	})
}

func FuzzMBR(f *testing.F) {
	f.Add(seedDisk(f, 2, Options{Table: "mbr", Align: 512}))
	f.Add(seedDisk(f, 7, Options{Table: "mbr", Align: 512}))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkTable(t, data, 512)
	})
}
