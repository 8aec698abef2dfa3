package xz

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// xzParts is an .xz file laid out as head, dataLen bytes of zeros, tail:
// written sparse, a file of millions of blocks takes little disk.
type xzParts struct {
	head    []byte
	dataLen int64
	tail    []byte
}

func (p xzParts) bytes() []byte {
	return imagetest.Cat(p.head, make([]byte, p.dataLen), p.tail)
}

func (p xzParts) write(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p.head, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(p.tail, int64(len(p.head))+p.dataLen); err != nil {
		t.Fatal(err)
	}
}

func streamHeader(check byte) []byte {
	b := append([]byte{}, headerMagic...)
	b = append(b, 0, check)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE([]byte{0, check}))
}

func streamFooter(indexLen int, check byte) []byte {
	ft := make([]byte, 12)
	binary.LittleEndian.PutUint32(ft[4:], uint32(indexLen/4-1))
	ft[9] = check
	binary.LittleEndian.PutUint32(ft[0:], crc32.ChecksumIEEE(ft[4:10]))
	copy(ft[10:], footerMagic)
	return ft
}

// xzIndex is an index of recs (unpadded, uncompressed size) with a valid
// CRC.
func xzIndex(recs [][2]uint64) []byte {
	idx := putVarint([]byte{0}, uint64(len(recs)))
	for _, r := range recs {
		idx = putVarint(putVarint(idx, r[0]), r[1])
	}
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	return binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
}

// hostileParts is one stream whose index holds recs over blocks of zeros
// (or, when they would take more than 1 GiB or overflow, over none).
func hostileParts(recs [][2]uint64, check byte) xzParts {
	var data uint64
	for _, r := range recs {
		data += (r[0] + 3) &^ 3
		if data > 1<<30 || r[0] > 1<<30 {
			data = 0
			break
		}
	}
	idx := xzIndex(recs)
	return xzParts{head: streamHeader(check), dataLen: int64(data), tail: imagetest.Cat(idx, streamFooter(len(idx), check))}
}

// hostileXZ is hostileParts in memory, without the data when it is over 1 MiB.
func hostileXZ(recs [][2]uint64, check byte, _ int) []byte {
	p := hostileParts(recs, check)
	if p.dataLen > 1<<20 {
		p.dataLen = 0
	}
	return p.bytes()
}

// blockHeaderBytes is a block header with both sizes and an LZMA2 filter
// of properties byte dict, with a valid CRC.
func blockHeaderBytes(csize, usize uint64, dict byte) []byte {
	b := []byte{0, 0xC0}
	b = putVarint(putVarint(b, csize), usize)
	b = append(b, filterLZMA, 1, dict)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b[0] = byte(len(b)/4 + 1 - 1)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

// setDict rewrites the dictionary byte of every block header of a file
// xz wrote (without sizes in the headers: xz -T1).
func setDict(t *testing.T, file []byte, dict byte) []byte {
	t.Helper()
	out := bytes.Clone(file)
	ix, err := ReadIndex(bytes.NewReader(out), int64(len(out)), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range ix.Blocks {
		n := (int(out[b.COff]) + 1) * 4
		h := out[b.COff : b.COff+int64(n)]
		i := bytes.Index(h[2:], []byte{filterLZMA, 1})
		if i < 0 {
			t.Fatal("no LZMA2 filter flags in the block header")
		}
		h[2+i+2] = dict
		binary.LittleEndian.PutUint32(h[n-4:], crc32.ChecksumIEEE(h[:n-4]))
	}
	return out
}

// TestHostileXZ opens .xz files whose headers and indexes are built to
// exhaust memory or disk or to overflow: each is refused at open with a
// one-line error naming the figures, or serves the right bytes, within a
// 64 MiB metadata budget and a 64 MiB cache.
func TestHostileXZ(t *testing.T) {
	o := imagetest.NewOutside(t)
	const budget = 64 << 20
	data := imagetest.Data(3<<20, 21)
	multi := imagetest.XZ(t, data, "-T2", "--block-size=1MiB", "-0")
	single := imagetest.XZ(t, data, "-T1", "-0")
	big := imagetest.XZ(t, make([]byte, 48<<20), "-T1", "-0")
	// 2^24 records of 12 bytes each (the least a block with no check
	// takes) over 192 MiB of zeros: a 224 MiB sparse file, the index
	// itself 32 MiB.
	many := func() xzParts {
		const n = 1 << 24
		idx := putVarint([]byte{0}, n)
		rec := putVarint(putVarint(nil, 12), 1)
		idx = append(idx, bytes.Repeat(rec, n)...)
		for len(idx)%4 != 0 {
			idx = append(idx, 0)
		}
		idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
		return xzParts{head: streamHeader(CheckNone), dataLen: 12 * n, tail: imagetest.Cat(idx, streamFooter(len(idx), CheckNone))}
	}
	emptyStreams := bytes.Repeat(hostileXZ(nil, CheckNone, 0), 1000)
	tests := []struct {
		name    string
		parts   func() xzParts
		file    []byte
		opts    Options
		openErr string // "": served, compare with want
		want    []byte
	}{
		{name: "2^24 index records", parts: many, openErr: "needs 384 MiB of memory, beyond the metadata limit of 64 MiB"},
		{name: "record count max", file: hostileXZ(nil, 0, 0)[:12], openErr: "not an xz file"},
		{name: "record count 2^63-1", parts: func() xzParts {
			idx := putVarint([]byte{0}, 1<<63-1)
			for len(idx)%4 != 0 {
				idx = append(idx, 0)
			}
			idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
			return xzParts{head: streamHeader(0), tail: imagetest.Cat(idx, streamFooter(len(idx), 0))}
		}, openErr: "index claims 9223372036854775807 records in 16 bytes"},
		{name: "record count 0", file: hostileXZ(nil, CheckNone, 0), openErr: "holds no data"},
		{name: "unpadded size 0", file: hostileXZ([][2]uint64{{0, 1}}, 0, 0), openErr: "sizes 0, 1 are out of range"},
		{name: "unpadded size 1", file: hostileXZ([][2]uint64{{1, 1}}, 0, 0), openErr: "unpadded size 1 is too small"},
		{name: "uncompressed size 2^62 from 24 bytes", file: hostileXZ([][2]uint64{{24, 1 << 62}}, 0, 0), openErr: "a block of 24 bytes claims 4611686018427387904 uncompressed bytes"},
		{name: "uncompressed size 2^62+1", file: hostileXZ([][2]uint64{{24, 1<<62 + 1}}, 0, 0), openErr: "out of range"},
		{name: "records summing past 2^63", file: hostileXZ(slices.Repeat([][2]uint64{{maxUnpadded, 1}}, 40), 0, 0), openErr: "block sizes overflow"},
		{name: "record of 2^58 bytes", file: hostileXZ([][2]uint64{{maxUnpadded + 1, 1}}, 0, 0), openErr: "out of range"},
		{name: "blocks do not fit before the index", file: hostileXZ([][2]uint64{{1 << 40, 1 << 41}}, 0, 0), openErr: "do not fit before it"},
		{name: "backward size max", file: imagetest.Cat(streamHeader(0), make([]byte, 8), streamFooter(1<<34, 0)), openErr: "does not fit in the file"},
		{name: "dictionary 4 GiB", file: setDict(t, single, 40), openErr: "larger than xz allows"},
		{name: "dictionary 1.5 GiB, 3 MiB block", file: setDict(t, single, 37), want: data},
		{name: "dictionary 1.5 GiB in every block", file: setDict(t, multi, 37), want: data},
		{name: "1000 empty streams, then data", file: imagetest.Cat(emptyStreams, multi), want: data},
		{name: "single block over the spill limit", file: big, opts: Options{SpillLimit: 16 << 20}, openErr: "the image's 48 MiB of uncompressed data would be decoded into a temporary file, but at most 16 MiB may be decoded"},
		{name: "single block within the spill limit", file: single, opts: Options{SpillLimit: 16 << 20}, want: data},
	}
	singleSpill = 1 << 20
	defer func() { singleSpill = 32 << 20 }()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(o.Dir, "hostile.xz")
			if tt.parts != nil {
				tt.parts().write(t, path)
			} else if err := os.WriteFile(path, tt.file, 0o644); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(path)
			opts := tt.opts
			opts.Budget = sources.NewBudget(budget)
			opts.CacheSize = 64 << 20
			opts.TempDir = t.TempDir()
			got, alloc, err := imagetest.OpenReadAll(t, path, Open, opts)
			switch {
			case tt.openErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.openErr) || strings.Contains(err.Error(), "\n") {
					t.Errorf("Open = %v, want one line containing %q", err, tt.openErr)
				}
			case err != nil:
				t.Errorf("Open and read = %v, want %d bytes", err, len(tt.want))
			case !bytes.Equal(got, tt.want):
				t.Errorf("read %d bytes, not the %d bytes compressed", len(got), len(tt.want))
			}
			// The bytes read, and the file's own data, are not metadata.
			if limit := imagetest.AllocBound(int64(budget + 2*len(tt.want) + len(tt.file))); alloc > limit {
				t.Errorf("allocated %s, more than %s", bytesize.Words(int64(alloc)), bytesize.Words(int64(limit)))
			}
			t.Logf("case %d: %v; allocated %s", i, err, bytesize.Words(int64(alloc)))
			o.Check(t, tt.name)
		})
	}
}
