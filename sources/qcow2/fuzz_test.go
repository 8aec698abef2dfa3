package qcow2

import (
	"os"
	"path/filepath"
	"testing"
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

// FuzzQcow2Header feeds arbitrary bytes to the header parser: no panic,
// and what it accepts has tables that lie inside the file and an L2
// geometry that fills a cluster.
func FuzzQcow2Header(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
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
		if len(h.backingFile) > maxBackingName {
			t.Fatalf("backing name of %d bytes accepted", len(h.backingFile))
		}
	})
}

// FuzzQcow2Image feeds arbitrary bytes, as a file, to Open, a few reads, and (on a writable open) writes, a zero, a
// trim and a flush: no panic, no endless loop, no allocation sized by an
// unchecked field, and what reads back after a write is what was written.
func FuzzQcow2Image(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := parseHeader(data, int64(len(data)))
		if err != nil || h.backingFile != "" {
			// Backing names in fuzzed input could point anywhere on this
			// machine: Open is exercised on images without one.
			return
		}
		path := filepath.Join(t.TempDir(), "f.qcow2")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if im, err := Open(path, Options{ReadOnly: true, CacheSize: 64 << 10}); err == nil {
			p := make([]byte, min(im.Size(), 64<<10))
			im.ReadAt(p, 0)
			im.ReadAt(p, im.Size()-int64(len(p)))
			im.Close()
		}
		im, err := Open(path, Options{CacheSize: 64 << 10})
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
