package lzma2

// The LZMA decoder proper. Everything the main loop touches is a local
// variable of decode (the range decoder, the dictionary position, the
// state and the distances): the range decoder's updates are written out in
// place or in functions that take and return values (bitNB, inlined), as
// a method on a struct would keep it in memory. The literal decoders,
// where most of the time goes, are functions of their own so that their
// loops keep everything in registers. Probability arrays are sized to a
// power of two, or indexed by values the compiler can bound, so that the
// loops have no bounds checks. Measured with BenchmarkDecode and
// -cpuprofile: a literal's 8 bits take about two thirds of the time.

const (
	top      = 1 << 24
	probBits = 11
	probInit = 1 << probBits / 2
	moveBits = 5
	minMatch = 2

	// Probability-model sizes of the LZMA format.
	numStates   = 12
	litStates   = 7 // states below are after a literal
	endPosModel = 14
	alignBits   = 4
)

// lenProbs is a length decoder: lengths 2-9 from low, 10-17 from mid
// (both per position state), 18-273 from high.
type lenProbs struct {
	choice, choice2 uint16
	// low[posState] at posState*8, mid[posState] at 128+posState*8, high
	// at 256: one array so that every index is masked, not checked.
	tree [512]uint16
}

// probs are the adaptive probabilities, as in the LZMA SDK, with padding.
type probs struct {
	isMatch    [256]uint16 // [state<<4 | posState]
	isRep      [16]uint16
	isRep0     [16]uint16
	isRep1     [16]uint16
	isRep2     [16]uint16
	isRep0Long [256]uint16 // [state<<4 | posState]
	slot       [256]uint16 // [lenState<<6 | symbol]
	special    [128]uint16 // 114 used
	align      [16]uint16
	matchLen   lenProbs
	repLen     lenProbs
	lit        [16][0x400]uint16 // 0x300 used per context
}

func fill(s []uint16) {
	for i := range s {
		s[i] = probInit
	}
}

func (p *probs) reset() {
	fill(p.isMatch[:])
	fill(p.isRep[:])
	fill(p.isRep0[:])
	fill(p.isRep1[:])
	fill(p.isRep2[:])
	fill(p.isRep0Long[:])
	fill(p.slot[:])
	fill(p.special[:])
	fill(p.align[:])
	for _, l := range []*lenProbs{&p.matchLen, &p.repLen} {
		l.choice, l.choice2 = probInit, probInit
		fill(l.tree[:])
	}
	for i := range p.lit {
		fill(p.lit[i][:0x300])
	}
}

// decode decodes LZMA symbols into z.buf from z.pos until limit (at most
// the end of the chunk or of z.buf), leaving a match that does not fit in
// z.mlen.
func (z *Reader) decode(limit int) error {
	hist := z.buf
	buf := hist[:limit]
	pos := z.pos
	p := &z.p
	in := &z.in
	rng, code, ip := z.rng, z.code, z.ip
	state := z.state
	rep0, rep1, rep2, rep3 := z.rep[0], z.rep[1], z.rep[2], z.rep[3]
	pbMask := uint32(1)<<z.pb - 1
	lpMask := uint32(1)<<z.lp - 1
	lc := z.lc
	dictCap := uint32(z.dictCap)
	wrapped := z.wrapped
	var err error

	if z.mlen > 0 {
		n := min(z.mlen, len(buf)-pos)
		copyBack(hist, pos, int(rep0), n)
		pos += n
		z.mlen -= n
	}

loop:
	for pos < len(buf) {
		ps := uint32(pos) & pbMask

		// isMatch
		if rng < top {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(ip)])
			ip++
		}
		pi := (state<<4 | ps) & 255
		pr := uint32(p.isMatch[pi])
		bound := (rng >> probBits) * pr
		if code < bound {
			rng = bound
			p.isMatch[pi] = uint16(pr + (1<<probBits-pr)>>moveBits)

			// A literal.
			var prev uint32
			if pos > 0 {
				prev = uint32(hist[pos-1])
			} else if wrapped {
				prev = uint32(hist[len(hist)-1])
			}
			lit := &p.lit[((uint32(pos)&lpMask)<<lc|prev>>(8-lc))&15]
			var sym uint32
			if state < litStates {
				rng, code, ip, sym = literal(lit, rng, code, in, ip)
			} else {
				// After a match: the byte at rep0 predicts this one
				// until the first bit that differs.
				src := pos - int(rep0) - 1
				if src < 0 {
					src += len(hist)
				}
				rng, code, ip, sym = matchedLiteral(lit, rng, code, in, ip, uint32(hist[src]))
			}
			buf[pos] = byte(sym)
			pos++
			switch {
			case state < 4:
				state = 0
			case state < 10:
				state -= 3
			default:
				state -= 6
			}
			continue
		}
		rng -= bound
		code -= bound
		p.isMatch[pi] = uint16(pr - pr>>moveBits)

		// isRep
		if rng < top {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(ip)])
			ip++
		}
		si := state & 15
		pr = uint32(p.isRep[si])
		bound = (rng >> probBits) * pr
		var lp *lenProbs
		if code < bound {
			// A new match: its length, then its distance.
			rng = bound
			p.isRep[si] = uint16(pr + (1<<probBits-pr)>>moveBits)
			rep3, rep2, rep1 = rep2, rep1, rep0
			if state < litStates {
				state = 7
			} else {
				state = 10
			}
			lp = &p.matchLen
		} else {
			rng -= bound
			code -= bound
			p.isRep[si] = uint16(pr - pr>>moveBits)

			// isRep0
			if rng < top {
				rng <<= 8
				code = code<<8 | uint32(in[uint16(ip)])
				ip++
			}
			pr = uint32(p.isRep0[si])
			bound = (rng >> probBits) * pr
			if code < bound {
				rng = bound
				p.isRep0[si] = uint16(pr + (1<<probBits-pr)>>moveBits)

				// isRep0Long
				if rng < top {
					rng <<= 8
					code = code<<8 | uint32(in[uint16(ip)])
					ip++
				}
				pr = uint32(p.isRep0Long[pi])
				bound = (rng >> probBits) * pr
				if code < bound {
					// A short rep: one byte from rep0.
					rng = bound
					p.isRep0Long[pi] = uint16(pr + (1<<probBits-pr)>>moveBits)
					if rep0 >= dictCap || (!wrapped && int(rep0) >= pos) {
						err = z.corrupt("distance %d is beyond the dictionary", rep0+1)
						break loop
					}
					src := pos - int(rep0) - 1
					if src < 0 {
						src += len(hist)
					}
					buf[pos] = hist[src]
					pos++
					if state < litStates {
						state = 9
					} else {
						state = 11
					}
					continue
				}
				rng -= bound
				code -= bound
				p.isRep0Long[pi] = uint16(pr - pr>>moveBits)
			} else {
				rng -= bound
				code -= bound
				p.isRep0[si] = uint16(pr - pr>>moveBits)

				// isRep1
				if rng < top {
					rng <<= 8
					code = code<<8 | uint32(in[uint16(ip)])
					ip++
				}
				pr = uint32(p.isRep1[si])
				bound = (rng >> probBits) * pr
				var d uint32
				if code < bound {
					rng = bound
					p.isRep1[si] = uint16(pr + (1<<probBits-pr)>>moveBits)
					d = rep1
				} else {
					rng -= bound
					code -= bound
					p.isRep1[si] = uint16(pr - pr>>moveBits)

					// isRep2
					if rng < top {
						rng <<= 8
						code = code<<8 | uint32(in[uint16(ip)])
						ip++
					}
					pr = uint32(p.isRep2[si])
					bound = (rng >> probBits) * pr
					if code < bound {
						rng = bound
						p.isRep2[si] = uint16(pr + (1<<probBits-pr)>>moveBits)
						d = rep2
					} else {
						rng -= bound
						code -= bound
						p.isRep2[si] = uint16(pr - pr>>moveBits)
						d = rep3
						rep3 = rep2
					}
					rep2 = rep1
				}
				rep1 = rep0
				rep0 = d
			}
			if state < litStates {
				state = 8
			} else {
				state = 11
			}
			lp = &p.repLen
		}

		// The length: choice bits, then a 3- or 8-bit tree.
		if rng < top {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(ip)])
			ip++
		}
		pr = uint32(lp.choice)
		bound = (rng >> probBits) * pr
		var base, end, l uint32
		if code < bound {
			rng = bound
			lp.choice = uint16(pr + (1<<probBits-pr)>>moveBits)
			base, end, l = ps<<3, 8, 0
		} else {
			rng -= bound
			code -= bound
			lp.choice = uint16(pr - pr>>moveBits)
			if rng < top {
				rng <<= 8
				code = code<<8 | uint32(in[uint16(ip)])
				ip++
			}
			pr = uint32(lp.choice2)
			bound = (rng >> probBits) * pr
			if code < bound {
				rng = bound
				lp.choice2 = uint16(pr + (1<<probBits-pr)>>moveBits)
				base, end, l = 128+ps<<3, 8, 8
			} else {
				rng -= bound
				code -= bound
				lp.choice2 = uint16(pr - pr>>moveBits)
				base, end, l = 256, 256, 16
			}
		}
		sym := uint32(1)
		for sym < end {
			if rng < top {
				rng <<= 8
				code = code<<8 | uint32(in[uint16(ip)])
				ip++
			}
			i := (base + sym) & 511
			var pr, bit uint32
			rng, code, pr, bit = bitNB(rng, code, uint32(lp.tree[i]))
			lp.tree[i] = uint16(pr)
			sym = sym<<1 | bit
		}
		l += sym - end

		if lp == &p.matchLen {
			// A new match: the distance slot, then its extra bits.
			slots := (min(l, 3) << 6) & 255
			sym := uint32(1)
			for sym < 64 {
				if rng < top {
					rng <<= 8
					code = code<<8 | uint32(in[uint16(ip)])
					ip++
				}
				i := (slots + sym) & 255
				var pr, bit uint32
				rng, code, pr, bit = bitNB(rng, code, uint32(p.slot[i]))
				p.slot[i] = uint16(pr)
				sym = sym<<1 | bit
			}
			slot := sym - 64
			d := slot
			if slot >= 4 {
				nd := slot>>1 - 1
				d = (2 | slot&1) << nd
				if slot < endPosModel {
					// Reverse bit tree over special[d-slot-1+sym].
					b := d - slot - 1
					sym := uint32(1)
					for k := uint32(0); k < nd; k++ {
						if rng < top {
							rng <<= 8
							code = code<<8 | uint32(in[uint16(ip)])
							ip++
						}
						i := (b + sym) & 127
						var pr, bit uint32
						rng, code, pr, bit = bitNB(rng, code, uint32(p.special[i]))
						p.special[i] = uint16(pr)
						sym = sym<<1 | bit
						d += bit << k
					}
				} else {
					// Direct bits, then 4 reversed align bits.
					d = 2 | slot&1
					for k := nd - alignBits; k > 0; k-- {
						if rng < top {
							rng <<= 8
							code = code<<8 | uint32(in[uint16(ip)])
							ip++
						}
						rng >>= 1
						code -= rng
						t := 0 - code>>31
						code += rng & t
						d = d<<1 + t + 1
					}
					d <<= alignBits
					sym := uint32(1)
					for k := uint32(0); k < alignBits; k++ {
						if rng < top {
							rng <<= 8
							code = code<<8 | uint32(in[uint16(ip)])
							ip++
						}
						i := sym & 15
						var pr, bit uint32
						rng, code, pr, bit = bitNB(rng, code, uint32(p.align[i]))
						p.align[i] = uint16(pr)
						sym = sym<<1 | bit
						d += bit << k
					}
					if d == 0xFFFFFFFF {
						err = z.corrupt("end of payload marker inside a chunk")
						break loop
					}
				}
			}
			rep0 = d
		}

		// Copy the match.
		if rep0 >= dictCap || (!wrapped && int(rep0) >= pos) {
			err = z.corrupt("distance %d is beyond the dictionary", rep0+1)
			break loop
		}
		n := int(l) + minMatch
		if rest := len(buf) - pos; n > rest {
			z.mlen = n - rest
			n = rest
		}
		src := pos - int(rep0) - 1
		if src >= 0 && int(rep0) >= n {
			copy(buf[pos:pos+n], hist[src:src+n])
		} else {
			copyBack(hist, pos, int(rep0), n)
		}
		pos += n
	}

	if err == nil && ip > z.inLen {
		err = z.corrupt("the range decoder reads past the chunk's %d compressed bytes", z.inLen)
	}
	z.pos = pos
	z.rng, z.code, z.ip = rng, code, ip
	z.state = state
	z.rep = [4]uint32{rep0, rep1, rep2, rep3}
	return err
}

// The bit decoders below never branch on a decoded bit: the bits of
// literals, lengths and distances are too random to predict. The compiler
// makes no conditional moves where the values end up in a load address, so
// the selections are masks: m0 is all ones when the bit is 0.
//
// Probabilities stay within 31..2017, where pr-(pr-2017)>>5 (arithmetic
// shift) equals pr+(2048-pr)>>5: one formula updates for either bit.

// literal decodes the 8 bits of a literal with probabilities lit. It is
// a function of its own so that its loop keeps everything in registers,
// and it loads both children of a tree node before the node's bit is
// known, taking the load off the chain from one bit to the next.
func literal(lit *[0x400]uint16, rng, code uint32, in *[maxChunkIn]byte, ip int) (uint32, uint32, int, uint32) {
	sym := uint32(1)
	pr := uint32(lit[1])
	for sym < 0x100 {
		if rng < top {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(ip)])
			ip++
		}
		bound := (rng >> probBits) * pr
		m0 := uint32(int64(uint64(code)-uint64(bound)) >> 63)
		c0 := uint32(lit[(sym<<1)&0x3FF])
		c1 := uint32(lit[(sym<<1|1)&0x3FF])
		r1 := rng - bound
		rng = r1 ^ ((r1 ^ bound) & m0)
		code -= bound &^ m0
		lit[sym&0x3FF] = uint16(pr - uint32((int32(pr)-int32(2017&m0))>>moveBits))
		sym = sym<<1 + 1 + m0
		pr = c1 ^ ((c1 ^ c0) & m0)
	}
	return rng, code, ip, sym & 0xFF
}

// matchedLiteral decodes a literal after a match, whose bits are predicted
// by those of match until the first one that differs.
func matchedLiteral(lit *[0x400]uint16, rng, code uint32, in *[maxChunkIn]byte, ip int, match uint32) (uint32, uint32, int, uint32) {
	// The probability of a bit is lit[offs+mbit+sym]: offs is 0x100
	// while the bits so far equal match's, 0 after; mbit is match's bit
	// at 0x100.
	sym := uint32(1)
	offs := uint32(0x100)
	mb := match << 1
	i := offs + mb&offs + sym
	pr := uint32(lit[i&0x3FF])
	for sym < 0x100 {
		if rng < top {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(ip)])
			ip++
		}
		bound := (rng >> probBits) * pr
		m0 := uint32(int64(uint64(code)-uint64(bound)) >> 63)
		mbit := mb & offs
		mb <<= 1
		offs0, offs1 := offs&^mbit, offs&mbit
		i0 := offs0 + mb&offs0 + sym<<1
		i1 := offs1 + mb&offs1 + sym<<1 | 1
		c0 := uint32(lit[i0&0x3FF])
		c1 := uint32(lit[i1&0x3FF])
		r1 := rng - bound
		rng = r1 ^ ((r1 ^ bound) & m0)
		code -= bound &^ m0
		lit[i&0x3FF] = uint16(pr - uint32((int32(pr)-int32(2017&m0))>>moveBits))
		sym = sym<<1 + 1 + m0
		offs = offs1 ^ ((offs1 ^ offs0) & m0)
		i = i1 ^ ((i1 ^ i0) & m0)
		pr = c1 ^ ((c1 ^ c0) & m0)
	}
	return rng, code, ip, sym & 0xFF
}

// bitNB decodes a bit with probability pr: it returns the range, code and
// probability after the bit, and the bit.
func bitNB(rng, code, pr uint32) (uint32, uint32, uint32, uint32) {
	bound := (rng >> probBits) * pr
	m0 := uint32(int64(uint64(code)-uint64(bound)) >> 63)
	r1 := rng - bound
	rng = r1 ^ ((r1 ^ bound) & m0)
	code -= bound &^ m0
	pr -= uint32((int32(pr) - int32(2017&m0)) >> moveBits)
	return rng, code, pr, m0 + 1
}

// copyBack copies n bytes to hist[pos:] from dist+1 bytes before them,
// hist being circular; pos+n <= len(hist) and dist < len(hist).
func copyBack(hist []byte, pos, dist, n int) {
	src := pos - dist - 1
	if src < 0 {
		src += len(hist)
	}
	for n > 0 {
		if src == len(hist) {
			src = 0
		}
		k := min(n, len(hist)-src)
		if src < pos && pos-src < k {
			// The source overlaps what is being written: repeat it.
			d := hist[pos : pos+k]
			s := hist[src : src+k]
			for i := range d {
				d[i] = s[i]
			}
		} else {
			copy(hist[pos:pos+k], hist[src:src+k])
		}
		pos += k
		src += k
		n -= k
	}
}
