package gzip

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

func fuzzSeeds(f *testing.F) [][]byte {
	data := imagetest.Data(5000, 11)
	a := imagetest.Gzip(f, data, "-1")
	return [][]byte{a, imagetest.Cat(a, imagetest.Gzip(f, data[:300], "-N")), imagetest.Cat(imagetest.Gzip(f, nil), make([]byte, 8))}
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
// or yields checkpoints inside the file; a good one round-trips.
func FuzzGzipIndexFile(f *testing.F) {
	data := imagetest.Data(20000, 3)
	file := imagetest.Gzip(f, data, "-1")
	ix, err := buildIndex(bytes.NewReader(file), int64(len(file)), 4096)
	if err != nil {
		f.Fatal(err)
	}
	ix.rangeCRCs(bytes.NewReader(file), int64(len(file)))
	f.Add(ix.marshal(int64(len(file))), int64(len(file)))
	f.Fuzz(func(t *testing.T, b []byte, fileSize int64) {
		ix, err := unmarshalIndex(b, fileSize)
		if err != nil {
			return
		}
		for i, cp := range ix.cps {
			lo, hi := ix.compRange(i, fileSize)
			if lo < 0 || hi > fileSize || lo >= hi || cp.uoff >= ix.size {
				t.Fatalf("checkpoint %d: %+v gives range %d..%d in a %d-byte file", i, cp, lo, hi, fileSize)
			}
		}
		if again, err := unmarshalIndex(ix.marshal(fileSize), fileSize); err != nil || len(again.cps) != len(ix.cps) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
