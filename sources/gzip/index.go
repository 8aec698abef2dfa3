package gzip

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"

	"github.com/nbdloop/nbdloop/sources/internal/blockcache"
	"github.com/nbdloop/nbdloop/sources/internal/compressed"
)

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
	w := newIndexer(r, size, interval, c)
	for {
		start := w.pr.pos()
		if start >= size || !w.memberAt(start) {
			break
		}
		if err := w.member(start); err != nil {
			return nil, err
		}
	}
	if w.ix.members == 0 {
		return nil, ErrNotGzip
	}
	w.ix.size = w.uoff
	w.dropEmpty()
	return w.ix, nil
}

// indexer is the state of buildIndex's pass: the index so far, where the
// pass is, and what is reused from one member to the next.
type indexer struct {
	r        io.ReaderAt
	size     int64
	interval int64
	c        *charger
	ix       *index
	pr       *posReader
	uoff     int64 // uncompressed offset of the next member
	last     int64 // the last checkpoint's uncompressed offset
	wbuf     bytes.Buffer
	comp     *flate.Writer // deflates checkpoint windows into wbuf
	cbErr    error         // the first error of blockEnd: it stops the decoder
	pending  []*pendingCP
	dropped  map[int]bool // checkpoints that resume wrongly
	plain    io.ReadCloser
	fd       *fixDecoder
	h32      hash.Hash32
	cbuf     []byte
}

func newIndexer(r io.ReaderAt, size, interval int64, c *charger) *indexer {
	w := &indexer{
		r: r, size: size, interval: interval, c: c,
		ix:      &index{},
		pr:      newPosReader(r, 0, size),
		dropped: map[int]bool{},
		plain:   flate.NewReader(nil),
		fd:      newFixDecoder(),
		h32:     crc32.NewIEEE(),
		cbuf:    make([]byte, 256<<10),
	}
	w.comp, _ = flate.NewWriter(&w.wbuf, flate.BestSpeed)
	return w
}

// memberAt reports whether a member starts at start, as the first always
// must; otherwise the rest of the file is trailing garbage.
func (w *indexer) memberAt(start int64) bool {
	if w.ix.members == 0 {
		return true
	}
	b, err := w.pr.Peek(min(2, int(w.size-start)))
	if err != nil || len(b) < 2 || b[0] != 0x1F || b[1] != 0x8B {
		w.ix.garbage = w.size - start
		return false
	}
	return true
}

// member indexes the member whose header is at start: it inflates the
// member, recording checkpoints, and checks its trailer.
func (w *indexer) member(start int64) error {
	h, err := readHeader(w.pr, start)
	if err != nil {
		return err
	}
	w.ix.members++
	dstart := start + h.size
	ms, err := w.startMember(dstart)
	if err != nil {
		return err
	}
	n, err := w.inflate(dstart)
	if err != nil {
		return err
	}
	dend := w.pr.pos()
	if err := w.checkTrailer(dend, n); err != nil {
		return err
	}
	w.settlePending()
	w.endMember(ms, n, dend)
	w.uoff += n
	return nil
}

// memberStart is what endMember needs to know of the member's start.
type memberStart struct {
	open     int   // the checkpoint whose segment holds the member's start
	added    bool  // the member started that checkpoint
	prevLast int64 // the last checkpoint's offset before it did
}

// startMember starts a checkpoint at the member's deflate data (at dstart)
// when it is the first or starts interval bytes after the last one: a
// segment may hold many small members. The checkpoint is charged first.
func (w *indexer) startMember(dstart int64) (memberStart, error) {
	ms := memberStart{open: len(w.ix.cps) - 1, prevLast: w.last}
	ms.added = len(w.ix.cps) == 0 || w.uoff-w.last >= w.interval
	if ms.added {
		if err := w.c.charge(cpMem); err != nil {
			return ms, err
		}
		w.ix.cps = append(w.ix.cps, checkpoint{uoff: w.uoff, coff: dstart})
		ms.open, w.last = len(w.ix.cps)-1, w.uoff
	}
	return ms, nil
}

// inflate inflates the member's deflate data, which starts at dstart,
// into the CRC32 and returns its size, recording the checkpoints due in
// it.
func (w *indexer) inflate(dstart int64) (int64, error) {
	mbase := w.uoff
	// Most members of many-member files (pigz -i, BGZF) end before
	// the next checkpoint is due: one reused decoder inflates them.
	// A member that does not is inflated again from its start by a
	// decoder that records checkpoints (klauspost/compress drops the
	// callback on Reset, so that one is new for every such member).
	need := w.last + w.interval - w.uoff
	w.plain.(flate.Resetter).Reset(w.pr, nil)
	w.h32.Reset()
	n, err := io.CopyBuffer(w.h32, io.LimitReader(w.plain, need+1), w.cbuf)
	if err == nil && n > need {
		w.pr = newPosReader(w.r, dstart, w.size)
		fr := flate.NewReaderOpts(w.pr, flate.WithEobCallback(func(cp flate.InflateCheckpoint) {
			w.blockEnd(cp, mbase, dstart)
		}))
		w.h32.Reset()
		n, err = copyVerifying(w.h32, fr, mbase, &w.pending, &w.cbErr, w.cbuf, w.fix)
	}
	if w.cbErr != nil {
		return 0, w.cbErr
	}
	if err != nil {
		var fe flate.CorruptInputError
		if errors.As(err, &fe) {
			return 0, corrupt(dstart+int64(fe), "deflate data: %w", err)
		}
		if err == io.ErrUnexpectedEOF {
			return 0, corrupt(w.pr.pos(), "the file ends inside a member (truncated?)")
		}
		return 0, err
	}
	return n, nil
}

// blockEnd is called at each deflate block end of the member that starts
// at mbase uncompressed and dstart in the file. Once interval bytes have
// passed since the last checkpoint, it records one there, charged first,
// with its window deflated, pending until the output that follows it can
// check it. Its errors go to cbErr.
func (w *indexer) blockEnd(cp flate.InflateCheckpoint, mbase, dstart int64) {
	u := mbase + cp.UncompressedOffset
	if u-w.last < w.interval || w.cbErr != nil {
		return
	}
	w.last = u
	w.wbuf.Reset()
	w.comp.Reset(&w.wbuf)
	w.comp.Write(cp.Window)
	if err := w.comp.Close(); err != nil {
		w.cbErr = err
		return
	}
	if err := w.c.charge(cpMem + int64(w.wbuf.Len())); err != nil {
		w.cbErr = err
		return
	}
	w.ix.cps = append(w.ix.cps, checkpoint{
		uoff: u, coff: dstart + cp.CompressedOffset, bit: cp.BitOffset,
		window: bytes.Clone(w.wbuf.Bytes()),
	})
	w.pending = append(w.pending, &pendingCP{idx: len(w.ix.cps) - 1, uoff: u, window: bytes.Clone(cp.Window)})
}

// fix checks pending checkpoint pc against the output that follows it
// (fixCheckpoint), and drops it if it does not resume right.
func (w *indexer) fix(pc *pendingCP) {
	if !fixCheckpoint(w.fd, w.r, w.size, &w.ix.cps[pc.idx], pc.window, pc.expect) {
		w.dropped[pc.idx] = true
	}
}

// checkTrailer reads the member's trailer at dend and checks the CRC32
// and the size n against it.
func (w *indexer) checkTrailer(dend, n int64) error {
	var tr [8]byte
	if _, err := io.ReadFull(w.pr, tr[:]); err != nil {
		return corrupt(dend, "the file ends inside a member trailer (truncated?)")
	}
	if got := binary.LittleEndian.Uint32(tr[:4]); got != w.h32.Sum32() {
		return corrupt(dend, "member CRC32 mismatch (the data is damaged)")
	}
	if got := binary.LittleEndian.Uint32(tr[4:]); got != uint32(n) {
		return corrupt(dend+4, "member size %d does not match its trailer's %d", n, got)
	}
	return nil
}

// settlePending checks the checkpoints still pending: the member ended
// before the output after them filled. One with no output after it at all
// is dropped.
func (w *indexer) settlePending() {
	for _, pc := range w.pending {
		if len(pc.expect) == 0 {
			w.dropped[pc.idx] = true
		} else {
			w.fix(pc)
		}
	}
	w.pending = w.pending[:0]
}

// endMember ends the member of n bytes whose deflate data ends at dend:
// a checkpoint it started is taken back if it is empty (it starts
// nothing), and every checkpoint from the one holding its start on has its
// members end there.
func (w *indexer) endMember(ms memberStart, n, dend int64) {
	if n == 0 && ms.added {
		w.ix.cps = w.ix.cps[:ms.open]
		w.c.undo(w.c.charged - cpMem)
		ms.open, w.last = ms.open-1, ms.prevLast
	}
	for i := max(ms.open, 0); i < len(w.ix.cps); i++ {
		w.ix.cps[i].memberEnd = dend
	}
}

// dropEmpty drops the checkpoints that start nothing (empty members, or a
// block boundary at a member's end) or that do not resume right, giving
// their memory back.
func (w *indexer) dropEmpty() {
	ix := w.ix
	cps := ix.cps[:0]
	var freed int64
	for i, cp := range ix.cps {
		end := ix.size
		if i+1 < len(ix.cps) {
			end = ix.cps[i+1].uoff
		}
		if w.dropped[i] || end <= cp.uoff {
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
	w.c.undo(w.c.charged - freed)
}

// segments returns the cache's segments, one per checkpoint, for a file of
// fileSize bytes: each is charged its compressed range and a decoder.
func (ix *index) segments(fileSize int64) []blockcache.Segment {
	segs := make([]blockcache.Segment, len(ix.cps))
	for i, cp := range ix.cps {
		end := ix.size
		if i+1 < len(ix.cps) {
			end = ix.cps[i+1].uoff
		}
		lo, hi := ix.compRange(i, fileSize)
		segs[i] = blockcache.Segment{Off: cp.uoff, Size: end - cp.uoff, Mem: hi - lo + 96<<10}
	}
	return segs
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
