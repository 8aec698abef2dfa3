package sourcetest

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

func newRand(name string) *rand.Rand {
	var seed uint64
	for _, b := range []byte(name) {
		seed = seed*131 + uint64(b)
	}
	return rand.New(rand.NewPCG(seed, 0x6e62646c6f6f70))
}

// iters returns n, or a quarter of it with -short.
func iters(n int) int {
	if testing.Short() {
		return max(2, n/4)
	}
	return n
}

// maxIO bounds the length of one request, keeping the checks fast on
// sources of any size.
const maxIO = 1 << 20

// randLen returns a request length: mostly small and unaligned, sometimes
// sector or page multiples, sometimes large.
func (c *checker) randLen(r *rand.Rand) int {
	var n int
	switch r.IntN(6) {
	case 0:
		n = 1 + r.IntN(16)
	case 1:
		n = 1 + r.IntN(1000)
	case 2:
		n = 512 * (1 + r.IntN(16))
	case 3:
		n = 4096 * (1 + r.IntN(32))
	case 4:
		n = 1 + r.IntN(64<<10)
	default:
		n = 1 + r.IntN(maxIO)
	}
	return int(min(int64(n), c.size))
}

// randOff returns an offset at which n bytes fit: uniform, sector or page
// aligned, at the start, or at the end.
func (c *checker) randOff(r *rand.Rand, n int) int64 {
	last := c.size - int64(n)
	switch r.IntN(6) {
	case 0:
		return 0
	case 1:
		return last
	case 2:
		return r.Int64N(last+1) &^ 511
	case 3:
		return r.Int64N(last+1) &^ 4095
	default:
		return r.Int64N(last + 1)
	}
}

// fillRandom fills p with random bytes that are never zero, so that data
// is never mistaken for a hole or for zeroed bytes.
func fillRandom(r *rand.Rand, p []byte) {
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, r.Uint64()|0x0101010101010101)
		p = p[8:]
	}
	for i := range p {
		p[i] = byte(r.Uint32()) | 1
	}
}
