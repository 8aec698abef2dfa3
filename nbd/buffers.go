package nbd

import (
	"math/bits"
	"sync"
)

// minBufferShift is the smallest buffer class, 4 KiB plus the reply header
// rounded up: most kernel requests are 4 KiB..128 KiB.
const minBufferShift = 13

// maxBufferShift holds a 32 MiB payload plus its reply header.
const maxBufferShift = 26

// buffer is a pooled byte slice with room for a reply header in front of the
// payload, so a READ reply goes out in one write without copying.
type buffer struct {
	b     []byte
	class int
}

// bufferPool hands out buffers by power-of-two size class. Pooling pointers
// (not slices) keeps Get and Put free of allocations at steady state.
type bufferPool struct {
	classes [maxBufferShift + 1]sync.Pool
}

func classFor(n int) int {
	if n <= 1<<minBufferShift {
		return minBufferShift
	}
	return bits.Len(uint(n - 1))
}

// get returns a buffer whose b has length n (at most 1<<maxBufferShift).
func (p *bufferPool) get(n int) *buffer {
	c := classFor(n)
	if v := p.classes[c].Get(); v != nil {
		buf := v.(*buffer)
		buf.b = buf.b[:n]
		return buf
	}
	return &buffer{b: make([]byte, n, 1<<c), class: c}
}

func (p *bufferPool) put(buf *buffer) {
	p.classes[buf.class].Put(buf)
}
