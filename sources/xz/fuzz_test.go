package xz

import (
	"bytes"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// fuzzSeeds are small .xz files from the real encoder: several blocks with
// sizes in their headers, several streams with padding, each check.
func fuzzSeeds(f *testing.F) [][]byte {
	// Small seeds: the fuzzer slows to a crawl on inputs of tens of KiB.
	data := imagetest.Data(6000, 11)
	a := imagetest.XZ(f, data, "-T2", "--block-size=1500", "-0")
	b := imagetest.XZ(f, data[:1000], "--check=sha256", "-0")
	return [][]byte{
		a,
		imagetest.Cat(a, make([]byte, 4), b),
		imagetest.XZ(f, data[:2000], "--check=none", "-0"),
		imagetest.XZ(f, data[:3000], "--check=crc32", "-T1", "--block-size=1000", "-0"),
		imagetest.XZ(f, nil),
	}
}

// FuzzXZIndex feeds arbitrary bytes to the container parser and, when they
// parse, to Open and a few reads: no panic, no allocation sized by an
// unchecked field (the decoder's dictionary is bounded by the cache size),
// and an index whose blocks line up.
func FuzzXZIndex(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	for _, s := range extremeSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		ix, err := ReadIndex(bytes.NewReader(data), size, sources.NewBudget(16<<20), "")
		if err != nil {
			return
		}
		var uoff int64
		for i, b := range ix.Blocks {
			if b.UOff != uoff || ix.USize(i) <= 0 {
				t.Fatalf("block %d at %d+%d, want it at %d", i, b.UOff, ix.USize(i), uoff)
			}
			if b.COff < headerLen || b.COff+roundup4(b.Unpadded()) > size {
				t.Fatalf("block %d at file offset %d+%d lies outside the %d-byte file", i, b.COff, b.Unpadded(), size)
			}
			uoff += ix.USize(i)
		}
		if uoff != ix.Size {
			t.Fatalf("Size = %d, blocks add up to %d", ix.Size, uoff)
		}
		s, err := Open(bytes.NewReader(data), size, Options{CacheSize: 4 << 20, Readahead: -1, TempDir: t.TempDir()})
		if err != nil {
			return
		}
		defer s.Close()
		imagetest.ReadEnds(s, 64<<10)
	})
}

// FuzzXZBlockHeader: the block header parser never panics, and what it
// accepts is an LZMA2 block whose header size matches.
func FuzzXZBlockHeader(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if len(s) > headerLen && s[headerLen] != 0 {
			n := (int(s[headerLen]) + 1) * 4
			if headerLen+n <= len(s) {
				f.Add(s[headerLen : headerLen+n])
			}
		}
	}
	for _, s := range extremeHeaders() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseBlockHeader(b)
		if err != nil {
			return
		}
		if h.size != int64(len(b)) || h.dict < 4096 {
			t.Fatalf("parseBlockHeader = %+v for %d bytes", h, len(b))
		}
	})
}

// extremeSeeds are small files whose index fields sit at the edges: record
// counts and sizes at 0, 1, max-1, max, and sums that overflow.
func extremeSeeds() [][]byte {
	const max62 = 1 << 62
	var out [][]byte
	for _, recs := range [][][2]uint64{
		nil,
		{{0, 0}},
		{{1, 1}},
		{{24, 0}},
		{{24, 1}},
		{{24, 1 << 21}},
		{{max62, max62}},
		{{max62 - 1, max62 - 1}},
		{{maxUnpadded, 1}},
		{{24, max62}, {24, max62}},
		{{1<<63 - 1, 1}, {1<<63 - 1, 1}},
	} {
		out = append(out, hostileXZ(recs, 0, 0))
	}
	return out
}

// extremeHeaders are block headers with extreme sizes and dictionaries.
func extremeHeaders() [][]byte {
	var out [][]byte
	for _, dict := range []byte{0, 1, 39, 40, 41, 0xFF} {
		for _, sizes := range [][2]uint64{{0, 0}, {1, 1}, {1<<62 - 1, 1 << 62}, {1 << 63, 1<<64 - 1}} {
			out = append(out, blockHeaderBytes(sizes[0], sizes[1], dict))
		}
	}
	return out
}
