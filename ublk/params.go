package ublk

import (
	"fmt"
	"math/bits"

	"github.com/nbdloop/nbdloop/sources"
)

// deviceParams are the SET_PARAMS of a device serving size bytes with caps
// in blockSize blocks (512 to 4096, a power of two) and requests of at most
// bufBytes: the basic parameters (block sizes, size, request size,
// read-only, rotational, volatile cache and FUA when the Source has a
// cache), plus discard (when the Source trims) and write-zeroes (when it
// is writable).
func deviceParams(size int64, caps sources.Caps, readOnly bool, blockSize, bufBytes int) (params, error) {
	if blockSize < 512 || blockSize > 4096 || blockSize&(blockSize-1) != 0 {
		return params{}, fmt.Errorf("ublk: block size %d: not a power of two from 512 to 4096", blockSize)
	}
	shift := uint8(bits.TrailingZeros(uint(blockSize)))
	p := params{len: paramsLen, types: paramTypeBasic}
	p.basic = paramBasic{
		logicalBSShift: shift, physicalBSShift: shift, ioMinShift: shift, ioOptShift: shift,
		maxSectors: uint32(bufBytes >> 9),
		devSectors: uint64(size/int64(blockSize)) * uint64(blockSize) >> 9,
	}
	ro := readOnly || caps.ReadOnly
	if ro {
		p.basic.attrs |= attrReadOnly
	}
	if caps.Rotational {
		p.basic.attrs |= attrRotational
	}
	if caps.Flush && !ro {
		p.basic.attrs |= attrVolatileCache | attrFUA
	}
	if !ro {
		// One segment per discard; the limits fit the 32-bit byte counts
		// of a request.
		const maxSectors = (1<<32 - 1) >> 9 &^ 7
		p.types |= paramTypeDiscard
		p.discard = paramDiscard{granularity: uint32(blockSize), maxSegments: 1, maxZeroesSectors: maxSectors}
		if caps.Trim {
			p.discard.maxDiscardSectors = maxSectors
		}
	}
	return p, nil
}
