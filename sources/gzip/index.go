package gzip

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"

	"github.com/nbdloop/nbdloop/sources/internal/compressed"
)

// Member header fields [RFC 1952].
const (
	flagText    = 1 << 0
	flagHCRC    = 1 << 1
	flagExtra   = 1 << 2
	flagName    = 1 << 3
	flagComment = 1 << 4
	maxField    = 1 << 20 // longest FNAME/FCOMMENT accepted
)

// ErrNotGzip is returned when the data does not start with a gzip member.
var ErrNotGzip = errors.New("not a gzip file")

// CorruptError reports gzip data that breaks the format at file offset
// Offset. It is compressed.CorruptError, the one such error of every
// compressed format (Format "gzip"); it matches ErrCorrupt.
type CorruptError = compressed.CorruptError

// ErrCorrupt is matched (errors.Is) by every *CorruptError.
var ErrCorrupt = compressed.ErrCorrupt

// corrupt returns the *CorruptError at file offset off; an error given
// with %w is kept as its Err.
func corrupt(off int64, format string, args ...any) error {
	return compressed.Corrupt("gzip", off, format, args...)
}

// posReader is a bufio.Reader over the file that knows its file offset.
type posReader struct {
	*bufio.Reader
	c    *compressed.CountReader
	base int64 // file offset of the reader's first byte
}

func newPosReader(r io.ReaderAt, off, size int64) *posReader {
	c := &compressed.CountReader{R: io.NewSectionReader(r, off, size-off)}
	return &posReader{Reader: bufio.NewReaderSize(c, 256<<10), c: c, base: off}
}

// pos returns the file offset of the next byte Read returns.
func (p *posReader) pos() int64 { return p.base + p.c.N - int64(p.Buffered()) }

// header is what a member header says that we use.
type header struct {
	size  int64 // header bytes
	bsize int64 // BGZF: the whole member's size, or 0
}

// readHeader parses a member header from r, whose first byte is at file
// offset at.
func readHeader(r io.ByteReader, at int64) (header, error) {
	h := header{}
	var n int64
	next := func() (byte, error) {
		b, err := r.ReadByte()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		n++
		return b, err
	}
	var fixed [10]byte
	for i := range fixed {
		b, err := next()
		if err != nil {
			return h, corrupt(at, "truncated member header")
		}
		fixed[i] = b
	}
	if fixed[0] != 0x1F || fixed[1] != 0x8B {
		return h, corrupt(at, "no gzip magic")
	}
	if fixed[2] != 8 {
		return h, corrupt(at, "compression method %d is not deflate", fixed[2])
	}
	flags := fixed[3]
	if flags&0xE0 != 0 {
		return h, corrupt(at, "reserved header flags %#02x are set", flags)
	}
	if flags&flagExtra != 0 {
		lo, err1 := next()
		hi, err2 := next()
		if err1 != nil || err2 != nil {
			return h, corrupt(at, "truncated extra field")
		}
		xlen := int(lo) | int(hi)<<8
		extra := make([]byte, xlen)
		for i := range extra {
			b, err := next()
			if err != nil {
				return h, corrupt(at, "truncated extra field")
			}
			extra[i] = b
		}
		// BGZF: subfield "BC" of 2 bytes holds the member size - 1.
		for len(extra) >= 4 {
			slen := int(binary.LittleEndian.Uint16(extra[2:4]))
			if len(extra) < 4+slen {
				break
			}
			if extra[0] == 'B' && extra[1] == 'C' && slen == 2 {
				h.bsize = int64(binary.LittleEndian.Uint16(extra[4:6])) + 1
			}
			extra = extra[4+slen:]
		}
	}
	for _, f := range []byte{flagName, flagComment} {
		if flags&f == 0 {
			continue
		}
		for k := 0; ; k++ {
			b, err := next()
			if err != nil {
				return h, corrupt(at, "truncated file name or comment")
			}
			if b == 0 {
				break
			}
			if k > maxField {
				return h, corrupt(at, "file name or comment longer than %d bytes", maxField)
			}
		}
	}
	if flags&flagHCRC != 0 {
		if _, err := next(); err != nil {
			return h, corrupt(at, "truncated header CRC")
		}
		if _, err := next(); err != nil {
			return h, corrupt(at, "truncated header CRC")
		}
	}
	h.size = n
	return h, nil
}

// checkpoint is a place where decoding can resume: the start of a member's
// deflate data, or the end of a deflate block with the 32 KiB of output
// before it.
type checkpoint struct {
	uoff   int64    // uncompressed offset
	coff   int64    // file offset of the byte holding the next bit
	bit    uint8    // bits of that byte already consumed
	window []byte   // the window, deflated; nil at a member start
	sum    [32]byte // SHA-256 of the compressed bytes of compRange
	// memberEnd is the file offset where the deflate data of the last
	// member that this checkpoint's segment reaches ends (its trailer
	// starts).
	memberEnd int64
}

// index is what the indexing pass finds.
type index struct {
	cps     []checkpoint
	size    int64 // uncompressed size
	members int
	garbage int64 // trailing bytes after the last member, ignored
	hashed  bool  // every checkpoint's sum is set
}

// buildIndex inflates the whole file once, without keeping the output,
// checking every member's CRC32 and size, and records a checkpoint at the
// first member's start, then at the first member start or deflate block
// end at least interval bytes after the previous checkpoint (a segment may
// hold many members). Every checkpoint is
// charged to c before it is kept; when c refuses, so does buildIndex.
func buildIndex(r io.ReaderAt, size, interval int64, c *charger) (*index, error) {
	ix := &index{}
	pr := newPosReader(r, 0, size)
	var uoff int64
	var last int64 // the last checkpoint's uncompressed offset
	var wbuf bytes.Buffer
	comp, _ := flate.NewWriter(&wbuf, flate.BestSpeed)
	var cbErr error
	var pending []*pendingCP
	dropped := map[int]bool{}
	plain := flate.NewReader(nil)
	fd := newFixDecoder()
	h32 := crc32.NewIEEE()
	cbuf := make([]byte, 256<<10)
	for {
		start := pr.pos()
		if start >= size {
			break
		}
		if ix.members > 0 {
			b, err := pr.Peek(min(2, int(size-start)))
			if err != nil || len(b) < 2 || b[0] != 0x1F || b[1] != 0x8B {
				ix.garbage = size - start
				break
			}
		}
		h, err := readHeader(pr, start)
		if err != nil {
			return nil, err
		}
		ix.members++
		dstart := start + h.size
		// A member starts a checkpoint when it starts interval bytes
		// after the last one: a segment may hold many small members.
		open := len(ix.cps) - 1 // the checkpoint whose segment holds the member's start
		prevLast := last
		added := len(ix.cps) == 0 || uoff-last >= interval
		if added {
			if err := c.charge(cpMem); err != nil {
				return nil, err
			}
			ix.cps = append(ix.cps, checkpoint{uoff: uoff, coff: dstart})
			open, last = len(ix.cps)-1, uoff
		}
		mbase := uoff
		// Most members of many-member files (pigz -i, BGZF) end before
		// the next checkpoint is due: one reused decoder inflates them.
		// A member that does not is inflated again from its start by a
		// decoder that records checkpoints (klauspost/compress drops the
		// callback on Reset, so that one is new for every such member).
		need := last + interval - uoff
		plain.(flate.Resetter).Reset(pr, nil)
		h32.Reset()
		n, err := io.CopyBuffer(h32, io.LimitReader(plain, need+1), cbuf)
		if err == nil && n > need {
			pr = newPosReader(r, dstart, size)
			fr := flate.NewReaderOpts(pr, flate.WithEobCallback(func(cp flate.InflateCheckpoint) {
				u := mbase + cp.UncompressedOffset
				if u-last < interval || cbErr != nil {
					return
				}
				last = u
				wbuf.Reset()
				comp.Reset(&wbuf)
				comp.Write(cp.Window)
				if err := comp.Close(); err != nil {
					cbErr = err
					return
				}
				if err := c.charge(cpMem + int64(wbuf.Len())); err != nil {
					cbErr = err
					return
				}
				ix.cps = append(ix.cps, checkpoint{
					uoff: u, coff: dstart + cp.CompressedOffset, bit: cp.BitOffset,
					window: bytes.Clone(wbuf.Bytes()),
				})
				pending = append(pending, &pendingCP{idx: len(ix.cps) - 1, uoff: u, window: bytes.Clone(cp.Window)})
			}))
			h32.Reset()
			n, err = copyVerifying(h32, fr, mbase, &pending, &cbErr, cbuf, func(pc *pendingCP) {
				if !fixCheckpoint(fd, r, size, &ix.cps[pc.idx], pc.window, pc.expect) {
					dropped[pc.idx] = true
				}
			})
		}
		if cbErr != nil {
			return nil, cbErr
		}
		if err != nil {
			var fe flate.CorruptInputError
			if errors.As(err, &fe) {
				return nil, corrupt(dstart+int64(fe), "deflate data: %w", err)
			}
			if err == io.ErrUnexpectedEOF {
				return nil, corrupt(pr.pos(), "the file ends inside a member (truncated?)")
			}
			return nil, err
		}
		dend := pr.pos()
		var tr [8]byte
		if _, err := io.ReadFull(pr, tr[:]); err != nil {
			return nil, corrupt(dend, "the file ends inside a member trailer (truncated?)")
		}
		if got := binary.LittleEndian.Uint32(tr[:4]); got != h32.Sum32() {
			return nil, corrupt(dend, "member CRC32 mismatch (the data is damaged)")
		}
		if got := binary.LittleEndian.Uint32(tr[4:]); got != uint32(n) {
			return nil, corrupt(dend+4, "member size %d does not match its trailer's %d", n, got)
		}
		for _, pc := range pending { // the member ended before they filled
			if len(pc.expect) == 0 || !fixCheckpoint(fd, r, size, &ix.cps[pc.idx], pc.window, pc.expect) {
				dropped[pc.idx] = true
			}
		}
		pending = pending[:0]
		if n == 0 && added { // an empty member starts nothing
			ix.cps = ix.cps[:open]
			c.undo(c.charged - cpMem)
			open, last = open-1, prevLast
		}
		for i := max(open, 0); i < len(ix.cps); i++ {
			ix.cps[i].memberEnd = dend
		}
		uoff += n
	}
	if ix.members == 0 {
		return nil, ErrNotGzip
	}
	ix.size = uoff
	// Drop checkpoints that start nothing (empty members, or a block
	// boundary at a member's end).
	cps := ix.cps[:0]
	var freed int64
	for i, cp := range ix.cps {
		end := ix.size
		if i+1 < len(ix.cps) {
			end = ix.cps[i+1].uoff
		}
		if dropped[i] || end <= cp.uoff {
			freed += cpMem + int64(len(cp.window))
			if len(cps) > 0 { // its members are the previous segment's now
				prev := &cps[len(cps)-1]
				prev.memberEnd = max(prev.memberEnd, cp.memberEnd)
			}
			continue
		}
		cps = append(cps, cp)
	}
	ix.cps = cps
	c.undo(c.charged - freed)
	return ix, nil
}

// compRange is the file range segment i's decoder reads: from its
// checkpoint to the next one's byte (or its member's end), plus a little
// slack for the decoder's bit buffer.
func (ix *index) compRange(i int, fileSize int64) (int64, int64) {
	cp := ix.cps[i]
	end := cp.memberEnd
	if i+1 < len(ix.cps) && ix.cps[i+1].coff < end {
		end = ix.cps[i+1].coff + 1
	}
	return cp.coff, min(fileSize, end+8)
}

// rangeHashes computes each checkpoint's SHA-256 of its compressed range,
// which reads check before they decode from it.
func (ix *index) rangeHashes(r io.ReaderAt, size int64) error {
	buf := make([]byte, 256<<10)
	for i := range ix.cps {
		lo, hi := ix.compRange(i, size)
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(r, lo, hi-lo), buf); err != nil {
			return err
		}
		h.Sum(ix.cps[i].sum[:0])
	}
	ix.hashed = true
	return nil
}

// verifyLen is how much output after a checkpoint is used to check it.
const verifyLen = 4096

// pendingCP is a checkpoint waiting for the output that follows it.
type pendingCP struct {
	idx    int
	uoff   int64
	window []byte
	expect []byte
}

// copyVerifying is io.Copy from the member's inflater to w that also hands
// each pending checkpoint the verifyLen bytes that follow it, calling done
// once they are there. base is the member's uncompressed offset. It stops
// early when *stop is set.
func copyVerifying(w io.Writer, r io.Reader, base int64, pending *[]*pendingCP, stop *error, buf []byte, done func(*pendingCP)) (int64, error) {
	var n int64
	for *stop == nil {
		k, err := r.Read(buf)
		if k > 0 {
			w.Write(buf[:k])
			pos := base + n // uncompressed offset of buf[0]
			n += int64(k)
			// Checkpoints are recorded during Read, at or after what it
			// has returned before.
			keep := (*pending)[:0]
			for _, pc := range *pending {
				need := pc.uoff + int64(len(pc.expect))
				if need >= pos && need < pos+int64(k) {
					end := min(int64(k), need-pos+int64(verifyLen-len(pc.expect)))
					pc.expect = append(pc.expect, buf[need-pos:end]...)
				}
				if len(pc.expect) >= verifyLen {
					done(pc)
				} else {
					keep = append(keep, pc)
				}
			}
			*pending = keep
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// fixDecoder is what fixCheckpoint reuses from one checkpoint to the next.
type fixDecoder struct {
	in  *bufio.Reader
	fr  io.Reader
	got []byte
}

func newFixDecoder() *fixDecoder {
	return &fixDecoder{in: bufio.NewReaderSize(nil, 64<<10), fr: flate.NewReader(nil), got: make([]byte, verifyLen)}
}

// fixCheckpoint makes sure decoding resumes correctly at cp: it decodes
// the bytes that follow from cp's offset, and from up to 8 bytes before it,
// and keeps the offset that reproduces them. (klauspost/compress v1.20.4
// reports the compressed offset too far after stored blocks: dataBlock adds
// the bytes already in its bit buffer to roffset a second time.)
func fixCheckpoint(d *fixDecoder, r io.ReaderAt, size int64, cp *checkpoint, window, expect []byte) bool {
	got := d.got[:len(expect)]
	for back := int64(0); back <= 8 && cp.coff-back >= 0; back++ {
		at := cp.coff - back
		d.in.Reset(io.NewSectionReader(r, at, size-at))
		err := d.fr.(interface {
			ResetCP(io.Reader, flate.InflateCheckpoint) error
		}).ResetCP(d.in, flate.InflateCheckpoint{UncompressedOffset: cp.uoff, CompressedOffset: at, BitOffset: cp.bit, Window: window})
		if err != nil {
			continue
		}
		n, _ := io.ReadFull(d.fr, got)
		if n == len(expect) && bytes.Equal(got, expect) {
			cp.coff = at
			return true
		}
	}
	return false
}
