package gzip

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

func fuzzSeeds(f *testing.F) [][]byte {
	data := imagetest.Data(5000, 11)
	a := imagetest.Gzip(f, data, "-1")
	seeds := [][]byte{a, imagetest.Cat(a, imagetest.Gzip(f, data[:300], "-N")), imagetest.Cat(imagetest.Gzip(f, nil), make([]byte, 8))}
	// Extreme header fields: every flag, XLEN 0, 1, 0xfffe, 0xffff, a BGZF
	// subfield claiming 0 and 0xffff bytes, stored blocks of LEN 0 and
	// 0xffff (with and without the data), a member cut in its trailer,
	// and many empty and one-byte members.
	member := func(flags byte, extra []byte, deflate []byte, trailer []byte) []byte {
		b := []byte{0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3}
		if flags&flagExtra != 0 {
			b = append(b, byte(len(extra)), byte(len(extra)>>8))
			b = append(b, extra...)
		}
		if flags&flagName != 0 {
			b = append(b, 'n', 0)
		}
		if flags&flagComment != 0 {
			b = append(b, 'c', 0)
		}
		if flags&flagHCRC != 0 {
			b = append(b, 0, 0)
		}
		return append(append(b, deflate...), trailer...)
	}
	empty := []byte{3, 0}          // a final fixed block with no symbols
	zeroTrailer := make([]byte, 8) // CRC 0, size 0
	for _, xlen := range []int{0, 1, 0xfffe, 0xffff} {
		seeds = append(seeds, member(0x1f, make([]byte, xlen), empty, zeroTrailer))
	}
	for _, bsize := range []uint16{0, 1, 0xffff} {
		seeds = append(seeds, member(flagExtra, []byte{'B', 'C', 2, 0, byte(bsize), byte(bsize >> 8)}, empty, zeroTrailer))
	}
	for _, n := range []uint16{0, 1, 0xffff} {
		stored := []byte{1, byte(n), byte(n >> 8), ^byte(n), ^byte(n >> 8)}
		seeds = append(seeds, member(0, nil, stored, zeroTrailer))
		seeds = append(seeds, member(0, nil, append(stored, make([]byte, n)...), zeroTrailer))
	}
	seeds = append(seeds, a[:len(a)-3], a[:10], bytes.Repeat(member(0, nil, empty, zeroTrailer), 1000),
		bytes.Repeat(imagetest.Gzip(f, []byte{7}), 1000), imagetest.Cat(a, []byte{0x1f, 0x8b}), imagetest.Cat(a, []byte{0x1f, 0x8b, 8, 0xff}))
	return seeds
}

// FuzzGzip opens arbitrary bytes (the indexing pass and the member parser)
// and reads what opens: no panic, and reads agree with the sizes found.
func FuzzGzip(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Open(bytes.NewReader(data), int64(len(data)), Options{Interval: 1024, Readahead: -1})
		if err != nil {
			return
		}
		defer s.Close()
		got := make([]byte, s.Size())
		if _, err := s.ReadAt(got, 0); err != nil {
			t.Fatalf("ReadAt(whole) of a file that indexed = %v", err)
		}
	})
}

// FuzzGzipHeader: the member header parser never panics and never claims
// more bytes than it read.
func FuzzGzipHeader(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s[:min(len(s), 64)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readHeader(bufio.NewReader(bytes.NewReader(data)), 0)
		if err == nil && (h.size < 10 || h.size > int64(len(data))) {
			t.Fatalf("readHeader = %+v for %d bytes", h, len(data))
		}
	})
}

// FuzzGzipIndexFile: a saved index file, damaged or hostile, is rejected
// or yields checkpoints inside the file, charging no more than the budget;
// a good one round-trips.
func FuzzGzipIndexFile(f *testing.F) {
	data := imagetest.Data(20000, 3)
	file := imagetest.Gzip(f, data, "-1")
	size := int64(len(file))
	c := &charger{budget: sources.NewBudget(1 << 20)}
	ix, err := buildIndex(bytes.NewReader(file), size, 4096, c)
	if err != nil {
		f.Fatal(err)
	}
	ix.rangeHashes(bytes.NewReader(file), size)
	key := indexKey{id: identity{Dev: 1, Ino: 2, Size: size, Mtime: 3, Ctime: 4}, hasID: true}
	good := ix.marshal(key, size)
	f.Add(good, size)
	for _, s := range hostileIndexes(good) {
		f.Add(s, size)
	}
	f.Fuzz(func(t *testing.T, b []byte, fileSize int64) {
		key := key
		key.id.Size = fileSize
		c := &charger{budget: sources.NewBudget(1 << 20)}
		ix, err := unmarshalIndex(b, key, fileSize, c.charge)
		if err != nil {
			return
		}
		if c.charged > 1<<20 {
			t.Fatalf("charged %d bytes, over the budget", c.charged)
		}
		for i, cp := range ix.cps {
			lo, hi := ix.compRange(i, fileSize)
			if lo < 0 || hi > fileSize || lo >= hi || cp.uoff >= ix.size {
				t.Fatalf("checkpoint %d: %+v gives range %d..%d in a %d-byte file", i, cp, lo, hi, fileSize)
			}
		}
		if again, err := unmarshalIndex(ix.marshal(key, fileSize), key, fileSize, c.charge); err != nil || len(again.cps) != len(ix.cps) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// hostileIndexes returns index files made from good with extreme fields
// (counts, offsets and window lengths at 0, 1, max-1, max), each with its
// checksum set again so that the field checks are what refuses them.
func hostileIndexes(good []byte) [][]byte {
	// Offsets of fields in good: magic, fileSize, hasID, identity (40),
	// sum (32), size, members, garbage, n, then the first checkpoint:
	// uoff, coff, bit, sum, memberEnd, wlen.
	o := len(indexMagic)
	fsizeAt := o
	sizeAt := o + 8 + 1 + 40 + 32
	membersAt := sizeAt + 8
	garbageAt := membersAt + 4
	nAt := garbageAt + 8
	cp := nAt + 4
	uoffAt, coffAt, bitAt, endAt, wlenAt := cp, cp+8, cp+16, cp+16+1+32, cp+16+1+32+8
	type field struct{ at, width int }
	fields := []field{{fsizeAt, 8}, {sizeAt, 8}, {membersAt, 4}, {garbageAt, 8}, {nAt, 4},
		{uoffAt, 8}, {coffAt, 8}, {bitAt, 1}, {endAt, 8}, {wlenAt, 4}}
	var out [][]byte
	for _, fl := range fields {
		for _, v := range []uint64{0, 1, 1<<(8*fl.width-1) - 1, 1 << (8*fl.width - 1), 1<<(8*fl.width) - 2, 1<<(8*fl.width) - 1} {
			b := bytes.Clone(good)
			for k := range fl.width {
				b[fl.at+k] = byte(v >> (8 * k))
			}
			out = append(out, resum(b))
		}
	}
	out = append(out, good[:len(good)/2], resum(bytes.Clone(good[:len(good)/2])), good[:len(indexMagic)+32])
	return out
}

// resum sets the SHA-256 at the end of an index file again.
func resum(b []byte) []byte {
	sum := sha256.Sum256(b[:len(b)-32])
	copy(b[len(b)-32:], sum[:])
	return b
}
