package zstd

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// FSE (finite state entropy) tables and bitstreams [RFC 8878, 4.1], as the
// counter reads the sequences section with them.

// The largest codes and accuracy logs [RFC 8878, 3.1.1.3.2.1.1, 4.1.1].
const (
	maxLLCode = 35
	maxMLCode = 52
	maxOFCode = 31
	maxLLLog  = 9
	maxMLLog  = 9
	maxOFLog  = 8
)

// Literals_Length and Match_Length codes: baseline and number of extra
// bits. Read-only.
var (
	llBase = [maxLLCode + 1]int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
		16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096,
		8192, 16384, 32768, 65536}
	llBits = [maxLLCode + 1]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12,
		13, 14, 15, 16}
	mlBase = [maxMLCode + 1]int32{3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
		19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
		35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051,
		4099, 8195, 16387, 32771, 65539}
	mlBits = [maxMLCode + 1]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11,
		12, 13, 14, 15, 16}
)

// The predefined distributions [RFC 8878, 3.1.1.3.2.2.1-3], accuracy logs
// 6, 5 and 6. Read-only.
var (
	llDefault = [...]int16{4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1,
		2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1,
		-1, -1, -1, -1}
	ofDefault = [...]int16{1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1}
	mlDefault = [...]int16{1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1,
		-1, -1, -1, -1, -1}
)

// fseCell is a state of an FSE decoding table: its symbol, and how the
// next state is found (Baseline plus Number_of_Bits read).
type fseCell struct {
	sym  uint8
	bits uint8
	base uint16
}

// fseTable is an FSE decoding table of 1<<log states (log 0: RLE).
type fseTable struct {
	cells  [1 << maxLLLog]fseCell
	log    uint8
	set    bool // defined in this frame
	predef bool // the predefined table (of any frame)
}

// backBits reads a bitstream backward, from its last bit to its first.
type backBits struct {
	b    []byte
	left int  // bits not read: b's first left bits
	over bool // a read went past the start
}

// read returns the next n bits (n <= 32); past the start, it sets over and
// returns 0.
func (r *backBits) read(n uint8) uint32 {
	if n == 0 {
		return 0
	}
	if int(n) > r.left {
		r.over, r.left = true, 0
		return 0
	}
	r.left -= int(n)
	i := r.left >> 3
	var w uint64
	if i+8 <= len(r.b) {
		w = binary.LittleEndian.Uint64(r.b[i:])
	} else {
		w = le(r.b[i:])
	}
	return uint32(w>>(r.left&7)) & (1<<n - 1)
}

// readDistribution reads an FSE table description [RFC 8878, 4.1.1] from
// the start of b into c.norm: it returns the number of symbols, the
// accuracy log and the bytes the description takes.
func (c *counter) readDistribution(b []byte, maxLog uint8, maxCode int) (n int, log uint8, used int, err error) {
	r := fwdBits{b: b}
	log = uint8(r.peek(4)) + 5
	r.pos += 4
	if log > maxLog {
		return 0, 0, 0, fmt.Errorf("accuracy log %d, more than %d", log, maxLog)
	}
	remaining := 1<<log + 1
	threshold := 1 << log
	width := int(log) + 1
	zero := false
	for remaining > 1 && n <= maxCode {
		if zero {
			// Repeat flags: a run of zero probabilities, 3 at a time
			// while the flag is 3.
			for {
				v := int(r.peek(2))
				r.pos += 2
				if n+v > maxCode+1 {
					return 0, 0, 0, fmt.Errorf("zero probabilities run past code %d", maxCode)
				}
				for range v {
					c.norm[n] = 0
					n++
				}
				if v != 3 || r.pos > 8*len(b) {
					break
				}
			}
			if n > maxCode {
				break
			}
		}
		most := 2*threshold - 1 - remaining
		v := int(r.peek(uint(width)))
		count := v & (threshold - 1)
		if count < most {
			r.pos += width - 1
		} else {
			count = v & (2*threshold - 1)
			if count >= threshold {
				count -= most
			}
			r.pos += width
		}
		p := count - 1
		if p < 0 {
			remaining--
		} else {
			remaining -= p
		}
		if remaining < 1 {
			return 0, 0, 0, fmt.Errorf("probabilities add up to more than %d", 1<<log)
		}
		c.norm[n] = int16(p)
		n++
		zero = p == 0
		for remaining < threshold {
			width--
			threshold >>= 1
		}
		if r.pos > 8*len(b) {
			return 0, 0, 0, fmt.Errorf("runs past the end of the block")
		}
	}
	if remaining != 1 {
		return 0, 0, 0, fmt.Errorf("probabilities add up to %d, not %d", 1<<log+1-remaining, 1<<log)
	}
	if r.pos > 8*len(b) {
		return 0, 0, 0, fmt.Errorf("runs past the end of the block")
	}
	return n, log, (r.pos + 7) / 8, nil
}

// fwdBits reads a bitstream forward, from its first bit; bits past the end
// read as 0 (the caller checks pos).
type fwdBits struct {
	b   []byte
	pos int
}

// peek returns the n bits (n <= 32) at pos without moving it.
func (r *fwdBits) peek(n uint) uint32 {
	if n == 0 {
		return 0
	}
	i := r.pos >> 3
	var w uint64
	switch {
	case i+8 <= len(r.b):
		w = binary.LittleEndian.Uint64(r.b[i:])
	case i < len(r.b):
		w = le(r.b[i:])
	}
	return uint32(w>>(r.pos&7)) & (1<<n - 1)
}

// build makes t the decoding table of distribution norm, accuracy log log
// [RFC 8878, 4.1.1]. It reports false, leaving t unusable, if the
// probabilities (-1 counting 1) do not add up to 1<<log.
func (t *fseTable) build(norm []int16, log uint8) bool {
	size := 1 << log
	sum := 0
	for _, p := range norm {
		switch {
		case p == -1: // "less than 1": one state
			sum++
		case p < -1:
			return false
		default:
			sum += int(p)
		}
	}
	if sum != size || len(norm) > maxMLCode+1 {
		t.set = false
		return false
	}
	high := size - 1
	var next [maxMLCode + 1]uint16
	for s, p := range norm {
		if p == -1 {
			t.cells[high].sym = uint8(s)
			high--
			next[s] = 1
		} else {
			next[s] = uint16(p)
		}
	}
	// The step is odd and the table a power of 2: pos visits every state
	// before it comes back to 0, and there are high+1 states to fill.
	step, mask, pos := size>>1+size>>3+3, size-1, 0
	for s, p := range norm {
		for range p {
			t.cells[pos].sym = uint8(s)
			for pos = (pos + step) & mask; pos > high; pos = (pos + step) & mask {
			}
		}
	}
	for u := range size {
		c := &t.cells[u]
		ns := next[c.sym]
		next[c.sym]++
		c.bits = log - uint8(bits.Len16(ns)-1)
		c.base = ns<<c.bits - uint16(size)
	}
	t.log = log
	return true
}
