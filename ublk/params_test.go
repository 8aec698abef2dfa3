package ublk

import (
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

func TestDeviceParams(t *testing.T) {
	const max = (1<<32 - 1) >> 9 &^ 7
	for _, c := range []struct {
		name    string
		size    int64
		caps    sources.Caps
		ro      bool
		bs      int
		wantErr bool
		want    params
	}{
		{name: "memory", size: 1 << 30, caps: sources.Caps{Trim: true, Zero: true}, bs: 512, want: params{len: 60, types: 3,
			basic:   paramBasic{logicalBSShift: 9, physicalBSShift: 9, ioMinShift: 9, ioOptShift: 9, maxSectors: 1024, devSectors: 1 << 21},
			discard: paramDiscard{granularity: 512, maxSegments: 1, maxDiscardSectors: max, maxZeroesSectors: max}}},
		{name: "file with a cache, 4k blocks, size rounded down", size: 1<<20 + 1000, caps: sources.Caps{Flush: true}, bs: 4096, want: params{len: 60, types: 3,
			basic:   paramBasic{attrs: attrVolatileCache | attrFUA, logicalBSShift: 12, physicalBSShift: 12, ioMinShift: 12, ioOptShift: 12, maxSectors: 1024, devSectors: 2048},
			discard: paramDiscard{granularity: 4096, maxSegments: 1, maxZeroesSectors: max}}},
		{name: "read-only source: no cache, no discard", size: 4096, caps: sources.Caps{ReadOnly: true, Flush: true, Rotational: true}, bs: 512, want: params{len: 60, types: 1,
			basic: paramBasic{attrs: attrReadOnly | attrRotational, logicalBSShift: 9, physicalBSShift: 9, ioMinShift: 9, ioOptShift: 9, maxSectors: 1024, devSectors: 8}}},
		{name: "--read-only", size: 4096, caps: sources.Caps{Trim: true}, ro: true, bs: 512, want: params{len: 60, types: 1,
			basic: paramBasic{attrs: attrReadOnly, logicalBSShift: 9, physicalBSShift: 9, ioMinShift: 9, ioOptShift: 9, maxSectors: 1024, devSectors: 8}}},
		{name: "block size 1000", size: 4096, bs: 1000, wantErr: true},
		{name: "block size 8192", size: 8192, bs: 8192, wantErr: true},
	} {
		got, err := deviceParams(c.size, c.caps, c.ro, c.bs, 512<<10)
		if (err != nil) != c.wantErr {
			t.Errorf("%s: error %v, want error %v", c.name, err, c.wantErr)
			continue
		}
		if err == nil && got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
}
