package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// fuzzSeeds are small images from qemu-img: 512-byte clusters keep them a
// few KiB, which the fuzzer needs to stay fast.
func fuzzSeeds(f *testing.F) [][]byte {
	dir := f.TempDir()
	var seeds [][]byte
	add := func(name string, create []string, io ...string) {
		img := filepath.Join(dir, name)
		qemuImg(f, append(append([]string{"create", "-q", "-f", "qcow2"}, create...), img, "256k")...)
		if len(io) > 0 {
			args := []string{"io"}
			for _, c := range io {
				args = append(args, "-c", c)
			}
			qemuImg(f, append(args, img)...)
		}
		seeds = append(seeds, readFile(f, img))
	}
	add("v3.qcow2", []string{"-o", "cluster_size=512"}, "write -P 1 0 3k", "write -z 8k 1k", "write -P 2 100k 600")
	add("v2.qcow2", []string{"-o", "compat=0.10,cluster_size=512"}, "write -P 3 1k 5k")
	add("rc1.qcow2", []string{"-o", "cluster_size=512,refcount_bits=1"}, "write -P 4 0 1k")
	add("rc64.qcow2", []string{"-o", "cluster_size=1k,refcount_bits=64"}, "write -P 5 200k 2k")
	add("extl2.qcow2", []string{"-o", "cluster_size=16k,extended_l2=on"}, "write -P 6 1k 1k", "write -z 20k 512")
	add("empty.qcow2", []string{"-o", "cluster_size=512"})

	raw := filepath.Join(dir, "raw")
	writeFile(f, raw, testData(16<<10, 1))
	for _, ct := range []string{"zlib", "zstd"} {
		img := filepath.Join(dir, ct+".qcow2")
		qemuImg(f, "convert", "-c", "-O", "qcow2", "-o", "cluster_size=512,compression_type="+ct, raw, img)
		seeds = append(seeds, readFile(f, img))
	}
	return seeds
}

// extremeSeeds are images whose header fields, one at a time, are 0, 1,
// max-1, max and the top bits, and whose offset and size pairs wrap when
// added or multiplied: the fuzzer rarely reaches such values by itself.
// The images are a small one with a backing file (b.raw) and a backing
// format extension, and base, one made by qemu-img with data.
func extremeSeeds(base []byte) [][]byte {
	small := spec{clusterBits: 9, size: 64 << 10, backing: "b.raw", backingFmt: "raw"}.build()
	fields := []struct{ off, width int }{
		{hBackingOffset, 8}, {hBackingSize, 4}, {hClusterBits, 4}, {hSize, 8}, {32, 4}, // crypt_method
		{hL1Size, 4}, {hL1Offset, 8}, {hRefOffset, 8}, {hRefClusters, 4}, {hNbSnapshots, 4}, {hSnapOffset, 8},
		{hIncompatible, 8}, {80, 8}, {88, 8}, {hRefOrder, 4}, {hHeaderLength, 4},
		{v3HeaderLen, 4}, {v3HeaderLen + 4, 4}, // first extension's type and length
	}
	var seeds [][]byte
	with := func(img []byte, ps ...func([]byte)) {
		b := append([]byte(nil), img...)
		patches(ps...)(b)
		seeds = append(seeds, b)
	}
	for _, img := range [][]byte{small, base} {
		for _, f := range fields {
			max := uint64(1)<<(8*f.width) - 1
			for _, v := range []uint64{0, 1, max - 1, max, max>>1 + 1, max >> 1} {
				if f.width == 8 {
					with(img, put64(f.off, v))
				} else {
					with(img, put32(f.off, uint32(v)))
				}
			}
		}
		cs := uint64(1) << binary.BigEndian.Uint32(img[hClusterBits:])
		with(img, put64(hBackingOffset, 1<<64-16), put32(hBackingSize, 32))
		with(img, put64(hBackingOffset, cs-1), put32(hBackingSize, 2))
		with(img, put64(hL1Offset, -cs), put32(hL1Size, 64))
		with(img, put32(hL1Size, 1<<29)) // *8 wraps 32 bits
		with(img, put32(hL1Size, 1<<22)) // 32 MiB, past the file
		with(img, put64(hRefOffset, -cs), put32(hRefClusters, 1))
		with(img, put32(hRefClusters, 1<<32-1)) // <<cluster_bits wraps
		with(img, put64(hSize, 1<<62))          // largest size accepted
		with(img, put64(hSize, 1<<62+1))
		with(img, put32(hNbSnapshots, 1), put64(hSnapOffset, -cs))
		with(img, put32(hHeaderLength, uint32(cs)))
		with(img, put32(hHeaderLength, uint32(cs)+8))
		with(img, put32(v3HeaderLen+4, 1<<32-7)) // +7 wraps 32 bits
		with(img, put64(hIncompatible, incCompression), put32(hHeaderLength, v3HeaderLen+8))
		with(img, put64(hIncompatible, incExtendedL2))
	}
	return seeds
}

// FuzzQcow2Header feeds arbitrary bytes to the header parser: no panic,
// and what it accepts has tables that lie inside the file and an L2
// geometry that fills a cluster.
func FuzzQcow2Header(f *testing.F) {
	seeds := fuzzSeeds(f)
	for _, s := range append(seeds, extremeSeeds(seeds[0])...) {
		f.Add(s[:min(len(s), 4096)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := parseHeader(data, int64(len(data)))
		if err != nil {
			return
		}
		if h.l2Entries*h.l2EntryBytes != h.clusterSize() {
			t.Fatalf("l2Entries %d * %d != cluster size %d", h.l2Entries, h.l2EntryBytes, h.clusterSize())
		}
		if h.l1Offset+uint64(h.l1Size)*8 > uint64(len(data)) || h.refTableOffset+uint64(h.refTableClusters)<<h.clusterBits > uint64(len(data)) {
			t.Fatalf("tables at L1 %d+%d, refcounts %d+%d clusters accepted in a %d-byte file", h.l1Offset, h.l1Size*8, h.refTableOffset, h.refTableClusters, len(data))
		}
		if uint64(h.l1Size)*8 > maxL1Bytes || uint64(h.refTableClusters)<<h.clusterBits > maxRefTableBytes {
			t.Fatalf("tables of %d L1 entries, %d refcount table clusters accepted", h.l1Size, h.refTableClusters)
		}
		if len(h.backingFile) > maxBackingName {
			t.Fatalf("backing name of %d bytes accepted", len(h.backingFile))
		}
	})
}

// FuzzQcow2Image feeds arbitrary bytes, as a file, to Open, a few reads, and (on a writable open) writes, a zero, a
// trim and a flush: no panic, no endless loop, no allocation sized by an
// unchecked field, the budget wholly given back by Close, and what reads
// back after a write is what was written. The image lies in a directory of
// its own beside b.raw, so that its backing file names are confined there
// (b.raw, the image itself, or nothing).
func FuzzQcow2Image(f *testing.F) {
	seeds := fuzzSeeds(f)
	for _, s := range append(seeds, extremeSeeds(seeds[0])...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := parseHeader(data, int64(len(data))); err != nil {
			return
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "f.qcow2")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "b.raw"), []byte("nbdloop fuzz backing file"), 0o600); err != nil {
			t.Fatal(err)
		}
		budget := sources.NewBudget(64 << 20)
		defer func() {
			if u := budget.Used(); u != 0 {
				t.Fatalf("%d bytes of the budget still charged after Close", u)
			}
		}()
		if im, err := Open(path, Options{ReadOnly: true, CacheSize: 64 << 10, Budget: budget}); err == nil {
			p := make([]byte, min(im.Size(), 64<<10))
			im.ReadAt(p, 0)
			im.ReadAt(p, im.Size()-int64(len(p)))
			im.Extents(0, min(im.Size(), 4<<20), func(sources.Extent) bool { return true })
			im.Close()
		}
		im, err := Open(path, Options{CacheSize: 64 << 10, Budget: budget})
		if err != nil {
			return
		}
		defer im.Close()
		w := []byte("nbdloop fuzz write")
		n := int64(len(w))
		if im.Size() < 2*n {
			return
		}
		for _, off := range []int64{0, im.Size() - n, im.Size() / 2} {
			if _, err := im.WriteAt(w, off); err != nil {
				return
			}
			p := make([]byte, n)
			if _, err := im.ReadAt(p, off); err != nil {
				return
			}
			if string(p) != string(w) {
				t.Fatalf("ReadAt(%d) after WriteAt = %q, want %q", off, p, w)
			}
		}
		im.Zero(0, min(im.Size(), 4096), false)
		im.Trim(0, min(im.Size(), 1<<20))
		im.Flush()
	})
}
