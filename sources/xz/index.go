package xz

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"

	"github.com/nbdloop/nbdloop/sources"
)

// Block is one block of an .xz file, as its stream's index records it. It
// takes 24 bytes (BlockBytes), charged to the Budget of ReadIndex: an index
// of millions of records is refused rather than held. Its uncompressed size
// is Index.USize.
type Block struct {
	UOff int64  // uncompressed offset in the whole file
	COff int64  // file offset of the block header
	unp  uint64 // the unpadded size (header + compressed data + check), and the check ID above bit 58
}

// BlockBytes is the memory one Block takes, as charged to the Budget.
const BlockBytes = 24

// maxUnpadded bounds a block's size on disk so that the check ID fits
// beside it in Block: 256 PiB.
const maxUnpadded = 1<<58 - 1

// Unpadded is the block's size on disk without its padding: header,
// compressed data and check.
func (b Block) Unpadded() int64 { return int64(b.unp & maxUnpadded) }

// Check is the ID of the block's check (its stream's).
func (b Block) Check() byte { return byte(b.unp >> 58) }

// Index is what ReadIndex finds: every non-empty block of every stream, in
// order.
type Index struct {
	Blocks  []Block
	Streams int
	Size    int64  // uncompressed size
	Padding int64  // stream padding bytes
	Checks  []byte // the check IDs of the streams, each once

	budget  *sources.Budget
	charged int64
}

// USize is the uncompressed size of block i.
func (ix *Index) USize(i int) int64 {
	if i+1 < len(ix.Blocks) {
		return ix.Blocks[i+1].UOff - ix.Blocks[i].UOff
	}
	return ix.Size - ix.Blocks[i].UOff
}

// Release gives the index's memory back to the Budget it was charged to;
// the Index must not be used afterwards.
func (ix *Index) Release() {
	ix.budget.Release(ix.charged)
	ix.charged = 0
	ix.Blocks = nil
}

// maxUSize bounds what a block can claim to decode to: an LZMA2 chunk of
// at least 6 bytes yields at most 2 MiB.
func maxUSize(unpadded int64) int64 { return (unpadded/6 + 1) << 21 }

// indexReader holds what the streams' walk shares: buffers reused from one
// stream to the next, and the budget.
type indexReader struct {
	r      io.ReaderAt
	ix     *Index
	what   string
	zeros  []byte
	br     *bufio.Reader
	counts []int // blocks per stream, last stream first
}

// ReadIndex reads the stream footers, indexes and headers of the .xz file
// r of size bytes, walking from its end, the way xz --list does: several
// streams, stream padding, every check type. It reads the blocks' data not
// at all, and the index of each stream once. The index's memory (BlockBytes
// per block, 16 bytes per stream) is charged to budget before it is
// allocated, naming the file as name; a nil budget charges nothing. On
// success the caller owns the charge (Index.Release); on error nothing
// stays charged.
func ReadIndex(r io.ReaderAt, size int64, budget *sources.Budget, name string) (*Index, error) {
	if size < headerLen+footerLen+8 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrNotXZ, size)
	}
	var head [6]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, err
	}
	if !bytes.Equal(head[:], headerMagic) {
		return nil, fmt.Errorf("%w: no xz magic at the start", ErrNotXZ)
	}
	if size%4 != 0 {
		return nil, fmt.Errorf("%w: size %d is not a multiple of 4 bytes (truncated? check it with xz -t)", ErrNotXZ, size)
	}
	if name == "" {
		name = "the xz file"
	}
	ix := &Index{budget: budget}
	w := &indexReader{r: r, ix: ix, what: name, zeros: make([]byte, 4<<10)}
	ix, err := w.read(size)
	if err != nil {
		w.ix.Release()
		return nil, err
	}
	return ix, nil
}

// read walks the streams from the end of the file to its start, then puts
// the blocks in file order and gives them their uncompressed offsets.
func (w *indexReader) read(size int64) (*Index, error) {
	ix := w.ix
	pos := size
	for pos > 0 {
		// Stream padding: NUL bytes in multiples of 4.
		pad, err := w.zerosBefore(pos)
		if err != nil {
			return nil, err
		}
		pos -= pad
		ix.Padding += pad
		if pos == 0 {
			return nil, corrupt(0, "only stream padding")
		}
		if pos < headerLen+footerLen+8 {
			return nil, corrupt(pos, "too short for a stream (truncated?)")
		}
		if err := w.growStreams(); err != nil {
			return nil, err
		}
		n, start, check, err := w.readStream(pos)
		if err != nil {
			return nil, err
		}
		w.counts = append(w.counts, n)
		if !bytes.Contains(ix.Checks, []byte{check}) {
			ix.Checks = append(ix.Checks, check)
		}
		pos = start
	}
	ix.Streams = len(w.counts)
	w.orderBlocks()
	if err := ix.setOffsets(); err != nil {
		return nil, err
	}
	return ix, nil
}

// growStreams makes room for one more stream's block count, charging the
// budget first: hostile files can hold millions of empty streams.
func (w *indexReader) growStreams() error {
	if len(w.counts) < cap(w.counts) {
		return nil
	}
	n := max(16, 2*cap(w.counts))
	if err := w.charge(int64(n-cap(w.counts))*16, "streams"); err != nil {
		return err
	}
	w.counts = append(make([]int, 0, n), w.counts...)
	return nil
}

// orderBlocks puts the blocks, which went in stream by stream from the
// last, in file order, keeping each stream's blocks in theirs.
func (w *indexReader) orderBlocks() {
	b := w.ix.Blocks
	slices.Reverse(b)
	at := 0
	for i := len(w.counts) - 1; i >= 0; i-- {
		slices.Reverse(b[at : at+w.counts[i]])
		at += w.counts[i]
	}
	w.counts = nil
}

// setOffsets turns each block's UOff, which holds its uncompressed size
// while the streams are read, into its uncompressed offset, and sets Size.
func (ix *Index) setOffsets() error {
	b := ix.Blocks
	var uoff int64
	for i := range b {
		usize := b[i].UOff
		if uoff > 1<<62-usize {
			return corrupt(b[i].COff, "the blocks' uncompressed sizes add up to more than 2^62 bytes")
		}
		b[i].UOff = uoff
		uoff += usize
	}
	ix.Size = uoff
	return nil
}

// charge takes n bytes for the index from the budget.
func (w *indexReader) charge(n int64, what string) error {
	if err := w.ix.budget.Charge(n, fmt.Sprintf("the index of %s (%s)", w.what, what)); err != nil {
		return err
	}
	w.ix.charged += n
	return nil
}

// grow makes room for n more blocks, charging the budget first.
func (w *indexReader) grow(n int) error {
	ix := w.ix
	if cap(ix.Blocks)-len(ix.Blocks) >= n {
		return nil
	}
	if len(ix.Blocks)+n > maxBlocks {
		return fmt.Errorf("xz file has more than %d blocks (recompress with larger blocks: nbdloop pack --block-size)", maxBlocks)
	}
	c := max(len(ix.Blocks)+n, min(2*cap(ix.Blocks), maxBlocks))
	if err := w.charge(int64(c)*BlockBytes, fmt.Sprintf("%d blocks", len(ix.Blocks)+n)); err != nil {
		return err
	}
	nb := make([]Block, len(ix.Blocks), c)
	copy(nb, ix.Blocks)
	ix.budget.Release(int64(cap(ix.Blocks)) * BlockBytes)
	ix.charged -= int64(cap(ix.Blocks)) * BlockBytes
	ix.Blocks = nb
	return nil
}

// zerosBefore counts the NUL bytes (a multiple of 4) right before end.
func (w *indexReader) zerosBefore(end int64) (int64, error) {
	r, buf := w.r, w.zeros
	var n int64
	for end-n > 0 {
		k := min(int64(len(buf)), end-n)
		b := buf[:k]
		if _, err := r.ReadAt(b, end-n-k); err != nil {
			return 0, err
		}
		i := len(b)
		for i > 0 && b[i-1] == 0 {
			i--
		}
		n += int64(len(b) - i)
		if i > 0 {
			break
		}
	}
	return n &^ 3, nil // a partial word of zeros belongs to the footer
}
