package zstd

import (
	"io"
	"math/bits"

	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// counter counts the bytes a frame decodes to without producing them
// [RFC 8878]: raw and RLE blocks count their Block_Size; a compressed block
// counts its literals section's Regenerated_Size plus the Match_Length of
// every sequence, read from the sequences section's headers, FSE table
// descriptions and bitstream. Huffman-coded literals are skipped by their
// Compressed_Size, never decoded.
//
// The count checks the structure it reads: field bounds (accuracy logs of
// at most 9/8/9 for literal lengths/offsets/match lengths, codes within
// their tables, table descriptions whose probabilities add up), bitstreams
// read exactly to their start, sequences that take no more literals than
// the block has, and blocks that regenerate at most Block_Maximum_Size
// (min(window, 128 KiB)). It does not check content: offsets, Huffman
// streams and the frame checksum are left to the decoder, so a frame the
// count accepts may still fail at its first read.
//
// Work is in proportion to the frame's compressed size: a sequence reads
// bits of the block, or is one of a run that reads none, and a run longer
// than the largest table repeats one sequence to the end of the block,
// which is then counted at once. Memory is the counter itself, of fixed
// size; nothing is allocated per frame or block.
type counter struct {
	r      io.ReaderAt
	window int64 // the largest window a frame may need (the cache size)
	// Per frame: the tables of the last block with sequences (for
	// Repeat_Mode), and whether a Huffman table has been seen (for
	// Treeless literals).
	ll, of, ml fseTable
	huffman    bool
	norm       [maxMLCode + 1]int16 // a table description's distribution
	head       [18]byte             // a frame or block header
	block      [maxBlock]byte
}

// newCounter returns a counter of the frames of r that refuses frames
// needing a window larger than window.
func newCounter(r io.ReaderAt, window int64) *counter {
	return &counter{r: r, window: window}
}

// frame returns the number of bytes frame f decodes to, or an error if
// that is more than most or the frame breaks the format.
func (c *counter) frame(f Frame, most int64) (int64, error) {
	n, err := c.r.ReadAt(c.head[:min(f.CSize, 18)], f.COff)
	if err != nil && err != io.EOF {
		return 0, err
	}
	h, err := parseFrameHeader(c.head[:n])
	if err != nil {
		return 0, corrupt(f.COff, "%w", err)
	}
	if h.window > c.window {
		return 0, corrupt(f.COff, "frame needs a %s window, more than the cache size of %s (raise --cache-size)", bytesize.Words(h.window), bytesize.Words(c.window))
	}
	blockMax := int(blockMaximum(h.window))
	c.ll.set, c.of.set, c.ml.set, c.huffman = false, false, false, false
	end := f.COff + f.CSize
	pos := f.COff + h.size
	var total int64
	for {
		bh := c.head[:3]
		if pos+3 > end {
			return 0, corrupt(pos, "the frame ends inside a block header")
		}
		if _, err := c.r.ReadAt(bh, pos); err != nil {
			return 0, err
		}
		v := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
		last, typ, size := v&1 != 0, (v>>1)&3, int(v>>3)
		if size > blockMax {
			return 0, corrupt(pos, "block of %d bytes is larger than the block maximum of %d", size, blockMax)
		}
		next := pos + 3 + int64(size)
		if typ == 1 {
			next = pos + 4
		}
		if next > end {
			return 0, corrupt(pos, "block runs past the end of the frame")
		}
		switch typ {
		case 0, 1: // Raw_Block, RLE_Block
			total += int64(size)
		case 2: // Compressed_Block
			b := c.block[:size]
			if _, err := c.r.ReadAt(b, pos+3); err != nil && size > 0 {
				return 0, err
			}
			k, err := c.compressed(b, pos+3, blockMax)
			if err != nil {
				return 0, err
			}
			total += int64(k)
		default:
			return 0, corrupt(pos, "reserved block type")
		}
		if total > most {
			return 0, corrupt(f.COff, "frame without a content size decodes to more than its blocks can hold (%d bytes)", most)
		}
		pos = next
		if last {
			break
		}
	}
	if h.checksum {
		if end-pos < 4 {
			return 0, corrupt(pos, "the frame ends inside its checksum")
		}
		pos += 4
	}
	if pos != end {
		return 0, corrupt(pos, "%d bytes after the frame's last block", end-pos)
	}
	return total, nil
}

// compressed returns the number of bytes compressed block b, at file
// offset off, regenerates: at most blockMax.
func (c *counter) compressed(b []byte, off int64, blockMax int) (int, error) {
	lit, p, err := c.literals(b, off, blockMax)
	if err != nil {
		return 0, err
	}
	nseq, p, err := sequenceCount(b, p, off)
	if err != nil {
		return 0, err
	}
	if nseq == 0 {
		if p != len(b) {
			return 0, corrupt(off+int64(p), "%d bytes after a sequences section of no sequences", len(b)-p)
		}
		return lit, nil
	}
	if p, err = c.tables(b, p, off); err != nil {
		return 0, err
	}
	return c.sequences(b[p:], off+int64(p), nseq, lit, blockMax)
}

// sequenceCount reads Number_of_Sequences at b[p:] (b at file offset off)
// and returns it with the position after it.
func sequenceCount(b []byte, p int, off int64) (nseq, next int, err error) {
	if p >= len(b) {
		return 0, 0, corrupt(off+int64(p), "compressed block has no sequences section")
	}
	nseq = int(b[p])
	switch {
	case nseq < 128:
		p++
	case nseq < 255:
		if p+2 > len(b) {
			return 0, 0, corrupt(off+int64(p), "sequences section header runs past the end of the block")
		}
		nseq = (nseq-128)<<8 | int(b[p+1])
		p += 2
	default:
		if p+3 > len(b) {
			return 0, 0, corrupt(off+int64(p), "sequences section header runs past the end of the block")
		}
		nseq = 0x7F00 + int(b[p+1]) + int(b[p+2])<<8
		p += 3
	}
	return nseq, p, nil
}

// tableKind is one of the three FSE tables of the sequences section.
type tableKind struct {
	t       *fseTable
	mode    byte
	def     []int16
	defLog  uint8
	maxLog  uint8
	maxCode int
	name    string
}

// tables reads Symbols_Compression_Modes at b[p:] (b at file offset off)
// and sets up the three tables it names, returning the position after
// their descriptions.
func (c *counter) tables(b []byte, p int, off int64) (int, error) {
	if p >= len(b) {
		return 0, corrupt(off+int64(p), "sequences section has no compression modes")
	}
	modes := b[p]
	if modes&3 != 0 {
		return 0, corrupt(off+int64(p), "reserved bits of the symbol compression modes are set")
	}
	p++
	kinds := [3]tableKind{
		{&c.ll, modes >> 6, llDefault[:], 6, maxLLLog, maxLLCode, "literals length"},
		{&c.of, modes >> 4 & 3, ofDefault[:], 5, maxOFLog, maxOFCode, "offset"},
		{&c.ml, modes >> 2 & 3, mlDefault[:], 6, maxMLLog, maxMLCode, "match length"},
	}
	for _, k := range kinds {
		var err error
		if p, err = c.table(k, b, p, off); err != nil {
			return 0, err
		}
		k.t.set = true
	}
	return p, nil
}

// table sets up table k from its mode and, for RLE and FSE_Compressed
// modes, its description at b[p:]; it returns the position after it.
func (c *counter) table(k tableKind, b []byte, p int, off int64) (int, error) {
	switch k.mode {
	case 0: // Predefined_Mode
		if !k.t.predef {
			k.t.build(k.def, k.defLog) // cannot fail
			k.t.predef = true
		}
	case 1: // RLE_Mode
		if p >= len(b) {
			return 0, corrupt(off+int64(p), "%s RLE symbol runs past the end of the block", k.name)
		}
		if int(b[p]) > k.maxCode {
			return 0, corrupt(off+int64(p), "%s code %d in RLE mode is beyond the last, %d", k.name, b[p], k.maxCode)
		}
		k.t.log, k.t.predef = 0, false
		k.t.cells[0] = fseCell{sym: b[p]}
		p++
	case 2: // FSE_Compressed_Mode
		k.t.predef = false
		n, log, used, err := c.readDistribution(b[p:], k.maxLog, k.maxCode)
		if err != nil {
			return 0, corrupt(off+int64(p), "%s table description: %w", k.name, err)
		}
		if !k.t.build(c.norm[:n], log) {
			return 0, corrupt(off+int64(p), "%s table description does not add up", k.name)
		}
		p += used
	case 3: // Repeat_Mode
		if !k.t.set {
			return 0, corrupt(off+int64(p), "%s table repeated, but no earlier block of the frame has one", k.name)
		}
	}
	return p, nil
}

// literals reads the literals section at the start of block b (at file
// offset off): it returns Regenerated_Size and the section's length.
func (c *counter) literals(b []byte, off int64, blockMax int) (lit, n int, err error) {
	if len(b) == 0 {
		return 0, 0, corrupt(off, "compressed block is empty")
	}
	typ, format := b[0]&3, b[0]>>2&3
	var skip int
	if typ <= 1 { // Raw_Literals_Block, RLE_Literals_Block
		switch format {
		case 0, 2:
			lit, n = int(b[0]>>3), 1
		case 1:
			n = 2
		case 3:
			n = 3
		}
		if n > len(b) {
			return 0, 0, corrupt(off, "literals section header runs past the end of the block")
		}
		if n > 1 {
			v := le(b[:n]) >> 4
			lit = int(v)
		}
		skip = lit
		if typ == 1 {
			skip = 1
		}
	} else { // Compressed_Literals_Block, Treeless_Literals_Block
		width := [4]uint{10, 10, 14, 18}[format]
		n = [4]int{3, 3, 4, 5}[format]
		if n > len(b) {
			return 0, 0, corrupt(off, "literals section header runs past the end of the block")
		}
		v := le(b[:n]) >> 4
		lit, skip = int(v&(1<<width-1)), int(v>>width)
		if typ == 3 && !c.huffman {
			return 0, 0, corrupt(off, "treeless literals, but no earlier block of the frame has a Huffman table")
		}
	}
	if lit > blockMax {
		return 0, 0, corrupt(off, "%d literals, more than the block maximum of %d", lit, blockMax)
	}
	if skip > len(b)-n {
		return 0, 0, corrupt(off, "literals section of %d bytes runs past the end of the block", n+skip)
	}
	if typ == 2 {
		c.huffman = true
	}
	return lit, n + skip, nil
}

// le is b (at most 8 bytes) as a little-endian number.
func le(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// sequences reads the nseq sequences of bitstream b (at file offset off)
// and returns lit plus their match lengths: the block's size.
func (c *counter) sequences(b []byte, off int64, nseq, lit, blockMax int) (int, error) {
	if len(b) == 0 || b[len(b)-1] == 0 {
		return 0, corrupt(off+int64(len(b))-1, "sequence bitstream has no end mark")
	}
	br := backBits{b: b, left: (len(b)-1)*8 + bits.Len8(b[len(b)-1]) - 1}
	ll, of, ml := &c.ll, &c.of, &c.ml
	llS, ofS, mlS := uint16(br.read(ll.log)), uint16(br.read(of.log)), uint16(br.read(ml.log))
	// A run of sequences that read no bits, longer than the largest
	// table, has brought every state into a cycle of such states, all of
	// one symbol (only a symbol of more than half the probability has
	// states that read no bits): the rest of the block repeats it.
	maxRun := 1 << max(ll.log, of.log, ml.log)
	run := 0
	var lits, matches int64
	for i := nseq; i > 0 && !br.over; i-- {
		l, o, m := ll.cells[llS&(1<<maxLLLog-1)], of.cells[ofS&(1<<maxLLLog-1)], ml.cells[mlS&(1<<maxLLLog-1)]
		ob, mb, lb := o.sym, mlBits[m.sym], llBits[l.sym]
		br.read(ob) // the offset: content, not size
		mlen := int64(mlBase[m.sym]) + int64(br.read(mb))
		llen := int64(llBase[l.sym]) + int64(br.read(lb))
		reps := int64(1)
		if ob+mb+lb+l.bits+o.bits+m.bits != 0 {
			run = 0
		} else if run++; run > maxRun {
			reps = int64(i)
		}
		lits += reps * llen
		matches += reps * mlen
		if lits > int64(lit) {
			return 0, corrupt(off, "sequences take more literals than the block's %d", lit)
		}
		if int64(lit)+matches > int64(blockMax) {
			return 0, corrupt(off, "block regenerates more than the block maximum of %d bytes", blockMax)
		}
		if i == 1 || reps > 1 {
			break
		}
		llS = l.base + uint16(br.read(l.bits))
		mlS = m.base + uint16(br.read(m.bits))
		ofS = o.base + uint16(br.read(o.bits))
	}
	if br.over {
		return 0, corrupt(off, "sequence bitstream ends before its %d sequences", nseq)
	}
	if br.left != 0 {
		return 0, corrupt(off, "%d bits left in the sequence bitstream after its %d sequences", br.left, nseq)
	}
	return lit + int(matches), nil
}
