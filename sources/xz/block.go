package xz

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"slices"
	"sync"

	"github.com/ulikunitz/xz/lzma"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources/internal/compressed"
	"github.com/nbdloop/nbdloop/sources/internal/lzma2"
)

// maxDict is the largest LZMA2 dictionary accepted: xz's own limit
// (--lzma2=dict=1536MiB). A larger one would cost that much memory per
// decoder.
const maxDict = 1536 << 20

// filterNames names the filters the xz tools know, for the error that
// explains how to recompress.
var filterNames = map[uint64]string{
	0x03: "delta", 0x04: "x86 BCJ", 0x05: "PowerPC BCJ", 0x06: "IA-64 BCJ",
	0x07: "ARM BCJ", 0x08: "ARM-Thumb BCJ", 0x09: "SPARC BCJ", 0x0A: "ARM64 BCJ",
	0x0B: "RISC-V BCJ", filterLZMA: "LZMA2",
}

// ErrFilter is wrapped by the error for blocks whose filter chain is not
// LZMA2 alone (BCJ, delta).
var ErrFilter = errors.New("unsupported xz filter")

// blockHeader is what a block header says.
type blockHeader struct {
	size  int64 // header bytes
	csize int64 // compressed size, or -1
	usize int64 // uncompressed size, or -1
	dict  int64 // LZMA2 dictionary size
}

// parseBlockHeader parses a whole block header (b holds exactly its
// (b[0]+1)*4 bytes).
func parseBlockHeader(b []byte) (blockHeader, error) {
	h := blockHeader{size: int64(len(b)), csize: -1, usize: -1}
	if len(b) < 8 || b[0] == 0 || int(b[0]+1)*4 != len(b) {
		return h, errors.New("bad block header size")
	}
	n := len(b) - 4
	if crc32.ChecksumIEEE(b[:n]) != binary.LittleEndian.Uint32(b[n:]) {
		return h, errors.New("block header CRC32 mismatch")
	}
	flags := b[1]
	if flags&0x3C != 0 {
		return h, fmt.Errorf("reserved block flags %#02x are set (a newer xz format?)", flags)
	}
	r := bytes.NewReader(b[2:n])
	if flags&0x40 != 0 {
		v, err := readVarint(r)
		if err != nil || v == 0 || v > 1<<62 {
			return h, errors.New("bad compressed size in the block header")
		}
		h.csize = int64(v)
	}
	if flags&0x80 != 0 {
		v, err := readVarint(r)
		if err != nil || v > 1<<62 {
			return h, errors.New("bad uncompressed size in the block header")
		}
		h.usize = int64(v)
	}
	nf := int(flags&3) + 1
	var ids []uint64
	var props []byte
	for i := 0; i < nf; i++ {
		id, err := readVarint(r)
		if err != nil {
			return h, errors.New("truncated filter flags in the block header")
		}
		psize, err := readVarint(r)
		if err != nil || psize > uint64(r.Len()) {
			return h, errors.New("truncated filter properties in the block header")
		}
		props = make([]byte, psize)
		r.Read(props)
		ids = append(ids, id)
	}
	for r.Len() > 0 {
		if c, _ := r.ReadByte(); c != 0 {
			return h, errors.New("block header padding is not zero")
		}
	}
	if len(ids) != 1 || ids[0] != filterLZMA {
		return h, filterChainError(ids)
	}
	if len(props) != 1 || props[0] > 40 {
		return h, errors.New("bad LZMA2 properties in the block header")
	}
	d, err := lzma.DecodeDictCap(props[0])
	if err != nil {
		return h, err
	}
	h.dict = d
	return h, nil
}

// filterChainError is the error for a block whose filter chain, ids, is
// not LZMA2 alone: it wraps ErrFilter and names the filters.
func filterChainError(ids []uint64) error {
	var names []string
	for _, id := range ids {
		name, ok := filterNames[id]
		if !ok {
			name = fmt.Sprintf("unknown filter %#x", id)
		}
		names = append(names, name)
	}
	return fmt.Errorf("%w: the blocks use the filter chain %q; only LZMA2 alone is supported (recompress without BCJ or delta: xz -dc IMAGE.xz | xz -T0 --filters=lzma2 > NEW.xz, or nbdloop pack)",
		ErrFilter, names)
}

// readBlockHeader reads and checks the header of b, of usize uncompressed
// bytes, against the index.
func readBlockHeader(r io.ReaderAt, b Block, usize int64) (blockHeader, error) {
	var first [1]byte
	if _, err := r.ReadAt(first[:], b.COff); err != nil {
		return blockHeader{}, err
	}
	if first[0] == 0 {
		return blockHeader{}, corrupt(b.COff, "the index points to an index, not a block")
	}
	buf := make([]byte, (int(first[0])+1)*4)
	if _, err := r.ReadAt(buf, b.COff); err != nil {
		return blockHeader{}, err
	}
	h, err := parseBlockHeader(buf)
	if errors.Is(err, ErrFilter) {
		return h, err
	}
	if err != nil {
		return h, corrupt(b.COff, "%w", err)
	}
	csize := b.Unpadded() - h.size - checkSize(b.Check())
	if csize <= 0 {
		return h, corrupt(b.COff, "the index's block size %d is smaller than the block header", b.Unpadded())
	}
	if h.csize >= 0 && h.csize != csize {
		return h, corrupt(b.COff, "block header says %d compressed bytes, the index %d", h.csize, csize)
	}
	if h.usize >= 0 && h.usize != usize {
		return h, corrupt(b.COff, "block header says %d uncompressed bytes, the index %d", h.usize, usize)
	}
	h.csize = csize
	if h.dict > maxDict {
		return h, corrupt(b.COff, "LZMA2 dictionary of %d bytes is larger than xz allows", h.dict)
	}
	return h, nil
}

// dictCap is the dictionary a decoder of a block of usize bytes needs:
// the block restarts the dictionary, so it never needs more than the
// block's size.
func dictCap(h blockHeader, usize int64) int64 {
	return max(lzma.MinDictCap, min(h.dict, usize))
}

// dictClasses are the dictionary sizes an LZMA2 properties byte can give
// (2^n and 3*2^(n-1) bytes, from 4 KiB): decoders are pooled by class,
// so a block's decoder holds its class's dictionary, no more.
var dictClasses = func() []int64 {
	var c []int64
	for p := 0; p < 40; p++ {
		c = append(c, int64(2|p&1)<<(p/2+11))
	}
	return c
}()

// dictClass returns the index of the smallest class of at least d bytes
// (d <= maxDict).
func dictClass(d int64) int {
	i, _ := slices.BinarySearch(dictClasses, d)
	return i
}

// decoderMem is the memory a decoder of a block needs: its dictionary
// class and its buffers.
func decoderMem(h blockHeader, usize int64) int64 {
	return dictClasses[dictClass(dictCap(h, usize))] + inBufSize
}

// inBufSize is what a decoder needs besides its dictionary: an
// lzma2.Reader holds one compressed chunk (64 KiB) and its probabilities.
const inBufSize = 128 << 10

var crc64Table = crc64.MakeTable(crc64.ECMA)

// decoders holds idle *lzma2.Reader by dictionary class: a decoder taken
// for a block keeps the dictionary and buffers of the one before, so
// decoding a block allocates next to nothing, and holds no more than its
// class's dictionary.
var decoders [40]sync.Pool

// blockReader decodes one block: exactly its uncompressed size, then it
// checks that the LZMA2 data ends there, that its compressed size matches
// the index, and the block's check. It takes its decoder (and so its
// dictionary) at the first Read; Mem tells the cache how much that is.
type blockReader struct {
	r     io.ReaderAt
	b     Block
	usize int64
	h     blockHeader
	in    *compressed.CountReader
	lz    *lzma2.Reader
	class int
	hash  hash.Hash
	left  int64
	err   error
}

// newBlockReader opens block b of usize uncompressed bytes for decoding,
// refusing a dictionary larger than limit bytes.
func newBlockReader(r io.ReaderAt, b Block, usize, limit int64) (*blockReader, error) {
	h, err := readBlockHeader(r, b, usize)
	if err != nil {
		return nil, err
	}
	if d := dictCap(h, usize); d > limit {
		return nil, fmt.Errorf("block at byte %d needs a %s LZMA2 dictionary, more than the cache size of %s (raise --cache-size)", b.COff, bytesize.Words(d), bytesize.Words(limit))
	}
	// The decoder reads each chunk's compressed bytes whole, straight
	// from the file, and nothing past the end marker: in.N is the
	// compressed size it used.
	in := &compressed.CountReader{R: io.NewSectionReader(r, b.COff+h.size, h.csize)}
	br := &blockReader{r: r, b: b, usize: usize, h: h, in: in, class: dictClass(dictCap(h, usize)), left: usize}
	switch b.Check() {
	case CheckCRC32:
		br.hash = crc32.NewIEEE()
	case CheckCRC64:
		br.hash = crc64.New(crc64Table)
	case CheckSHA256:
		br.hash = sha256.New()
	}
	return br, nil
}

// Mem is the memory the decoder holds once reading: its dictionary class
// and buffers.
func (br *blockReader) Mem() int64 { return dictClasses[br.class] + inBufSize }

func (br *blockReader) Read(p []byte) (int, error) {
	if br.err != nil {
		return 0, br.err
	}
	if br.left == 0 {
		br.err = io.EOF
		return 0, io.EOF
	}
	if int64(len(p)) > br.left {
		p = p[:br.left]
	}
	if br.lz == nil {
		lz, _ := decoders[br.class].Get().(*lzma2.Reader)
		if lz == nil {
			lz = new(lzma2.Reader)
		}
		if err := lz.Reset(br.in, int(dictClasses[br.class])); err != nil {
			br.err = err // not reached: classes are at least 4 KiB
			return 0, err
		}
		br.lz = lz
	}
	n, err := br.lz.Read(p)
	if br.hash != nil {
		br.hash.Write(p[:n])
	}
	br.left -= int64(n)
	switch {
	case err == io.EOF && br.left > 0:
		err = corrupt(br.b.COff, "block ends after %d of its %d uncompressed bytes", br.usize-br.left, br.usize)
	case err != nil && err != io.EOF:
		var ce *CorruptError
		if errors.Is(err, lzma2.ErrCorrupt) && !errors.As(err, &ce) {
			err = corrupt(br.b.COff+br.h.size+br.in.N, "%w", err)
		}
	case br.left == 0:
		err = br.finish()
	default:
		err = nil
	}
	if err != nil && err != io.EOF {
		br.err = err
	}
	return n, err
}

// finish checks the end of the block once all of its bytes are out.
func (br *blockReader) finish() error {
	var one [1]byte
	if n, err := br.lz.Read(one[:]); n != 0 || err != io.EOF {
		if n != 0 {
			return corrupt(br.b.COff, "block holds more than the %d uncompressed bytes its index records", br.usize)
		}
		if err != nil && !errors.Is(err, lzma2.ErrCorrupt) {
			return err // reading the file
		}
		return corrupt(br.b.COff+br.h.size+br.in.N, "LZMA2 end marker: %w", err)
	}
	if got := br.in.N; got != br.h.csize {
		return corrupt(br.b.COff, "block has %d compressed bytes, the index says %d", got, br.h.csize)
	}
	pad := roundup4(br.h.csize) - br.h.csize
	tail := make([]byte, pad+checkSize(br.b.Check()))
	at := br.b.COff + br.h.size + br.h.csize
	if _, err := br.r.ReadAt(tail, at); err != nil {
		return err
	}
	for _, c := range tail[:pad] {
		if c != 0 {
			return corrupt(at, "block padding is not zero")
		}
	}
	if br.hash == nil {
		return nil // none, or a check ID xz reserves: not verified, as xz does
	}
	sum := br.hash.Sum(nil)
	want := tail[pad:]
	if br.b.Check() != CheckSHA256 {
		// CRC32 and CRC64 are stored little-endian; Sum is big-endian.
		for i, j := 0, len(sum)-1; i < j; i, j = i+1, j-1 {
			sum[i], sum[j] = sum[j], sum[i]
		}
	}
	if !bytes.Equal(sum, want) {
		return corrupt(at+pad, "%s check mismatch in the block at byte %d (the data is damaged)", CheckName(br.b.Check()), br.b.COff)
	}
	return nil
}

// Close returns the decoder to the pool.
func (br *blockReader) Close() error {
	if br.lz != nil {
		br.lz.Reset(nil, int(dictClasses[br.class])) // drops the file, keeps the buffers
		decoders[br.class].Put(br.lz)
		br.lz = nil
	}
	br.err = errors.New("xz: block reader closed")
	return nil
}
