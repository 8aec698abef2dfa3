// Package xz serves the uncompressed contents of an .xz file as a read-only
// sources.Source with random access: `nbdloop attach disk.img.xz`.
//
// Open reads only the container's ends: the stream footers and indexes,
// walking back from the end of the file as xz --list does (several streams,
// stream padding, every check type). A read decodes only the blocks it
// touches, with nbdloop's own LZMA2 decoder (sources/internal/lzma2; its
// speed is in docs/performance.md), and verifies
// each block's check (CRC32, CRC64, SHA-256) and sizes when it is decoded to
// its end. Decoded data lives in one cache shared by every connection,
// within Options.CacheSize (DefaultCacheSize); different blocks decode in
// parallel on all cores, a block is never decoded twice at once, reads
// through a large block continue its decoder instead of starting over, and
// sequential reads decode the next blocks ahead (see blockcache).
//
// Random access is at block granularity, so it is fast only for files of
// many blocks: xz -T0 (the default from xz 5.6) writes blocks of 3 times the
// dictionary (24 MiB at -6), `xz -T0 --block-size=4MiB` or `nbdloop pack`
// smaller ones. A file that is one large block (xz -T1, older xz) is decoded
// once, in the background, into a sparse temporary file in
// Options.TempDir ($TMPDIR, else /var/tmp); each read waits until the decoder
// has passed its range, and Warnings suggests repacking.
//
// Untrusted files: the index takes BlockBytes (24) per block, charged to
// Options.Budget (the device's metadata limit, sources.DefaultMetadataLimit
// when nil) before it is allocated, so a file whose index lists millions of
// blocks is refused at open with the figures. Each decoder is charged to
// the cache its block's own dictionary (rounded up to the sizes LZMA2 can
// declare) plus 128 KiB of buffers, from the moment it reads its header. A
// single-block file is spilled only if its uncompressed size fits in
// Options.SpillLimit and the free space of TempDir (see
// blockcache.SpillBound); Open refuses it otherwise. Nothing is decoded
// inside Open.
//
// Limits: only LZMA2 blocks; a BCJ or delta filter fails Open with an error
// that says how to recompress. At most 2^24 blocks. Checks are verified
// when a block is decoded to its end: bytes served from a block before its
// end is reached are not yet verified. Read-only: every modifying call
// fails with ErrReadOnly (`--filter cow` on top makes the device writable).
//
// Example:
//
//	f, _ := os.Open("disk.img.xz")
//	fi, _ := f.Stat()
//	src, err := xz.Open(f, fi.Size(), xz.Options{})
package xz

import (
	"fmt"
	"io"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/blockcache"
	"github.com/nbdloop/nbdloop/sources/internal/compressed"
)

// DefaultCacheSize is the default memory budget of the decode cache.
const DefaultCacheSize = blockcache.DefaultBudget

// singleSpill: a file that is one block larger than this is decoded into
// the spill file rather than through the cache.
var singleSpill int64 = 32 << 20

// largeBlock: blocks larger than this make random reads slow enough to
// warn about.
var largeBlock int64 = 64 << 20

// ErrReadOnly is returned by every modifying call: compressed images are
// read-only. It wraps sources.ErrReadOnly.
var ErrReadOnly = fmt.Errorf("xz images are read-only (attach with -r, or add --filter cow for a writable overlay): %w", sources.ErrReadOnly)

// Options tune Open. The zero value is the default.
type Options struct {
	// CacheSize bounds the memory of decoded data and decoders, in bytes
	// (0: DefaultCacheSize).
	CacheSize int64
	// TempDir is where a single-block file is decoded to ("": $TMPDIR,
	// else /var/tmp).
	TempDir string
	// Readahead is how many blocks are decoded ahead of sequential reads
	// (0: GOMAXPROCS; -1: none).
	Readahead int
	// Sequential tells that the file will be read once, in order: a
	// single large block is then decoded as the reads go, not into a
	// temporary file.
	Sequential bool
	// Budget is the device's metadata memory budget, charged for the
	// index (nil: a budget of sources.DefaultMetadataLimit of its own).
	// The charge is released by Close.
	Budget *sources.Budget
	// SpillLimit bounds the temporary file of a single-block file, in
	// bytes (0: blockcache.DefaultSpillLimit, 64 GiB; negative: only the
	// free space bounds it). See blockcache.SpillBound.
	SpillLimit int64
	// Progress, when set, is told how far the background decode of a
	// single-block file into TempDir is: the uncompressed bytes decoded and
	// the file's uncompressed size, after each chunk and done == total at
	// the end (see blockcache.Options.SpillProgress). Files read through
	// the cache report nothing.
	Progress func(done, total int64)
	// Name names the file in messages ("" : the name of r if it has one).
	Name string
}

// Source is an .xz file served uncompressed: a read-only sources.Source
// whose methods, except Close, may be called in parallel. ReadAt decodes
// the blocks it needs through the shared cache; WriteAt, Trim and Zero fail
// with ErrReadOnly and Flush does nothing. Stats returns the decode cache's
// counters and Warnings what attach should tell the user about this file,
// one line each (a single large block, blocks large enough to make random
// reads slow, checks that cannot be verified). Close stops the decoders,
// drops the cache and closes the file if it is an io.Closer; a second Close
// returns nil.
type Source struct {
	image // Size, Caps, ReadAt, WriteAt, Flush, Trim, Zero, Close, Stats, Warnings
	r     io.ReaderAt
	limit int64 // largest decoder memory accepted: the budget
	index *Index
	first blockHeader // block 0's
}

// image is embedded under an unexported name, so that Source exports
// nothing but its methods.
type image = compressed.Image

// Open indexes the .xz file r of size bytes. If r is an io.Closer, Close
// closes it.
func Open(r io.ReaderAt, size int64, opts Options) (*Source, error) {
	budget := opts.Budget
	if budget == nil {
		budget = sources.NewBudget(0)
	}
	name := opts.Name
	if n, ok := r.(interface{ Name() string }); ok && name == "" {
		name = n.Name()
	}
	ix, err := ReadIndex(r, size, budget, name)
	if err != nil {
		return nil, err
	}
	s, err := open(r, ix, opts)
	if err != nil {
		ix.Release()
		return nil, err
	}
	return s, nil
}

func open(r io.ReaderAt, ix *Index, opts Options) (*Source, error) {
	if ix.Size == 0 {
		return nil, fmt.Errorf("xz file holds no data: %w", sources.ErrEmpty)
	}
	budget := opts.CacheSize
	if budget <= 0 {
		budget = DefaultCacheSize
	}
	s := &Source{r: r, index: ix, limit: budget}
	// The filter chain must be usable before the device appears: check
	// the first block's header now (the others when they are read). xz
	// writes every block with the same filters, so its dictionary size
	// serves to estimate every decoder's memory until its own header is
	// read (see blockReader.Mem).
	h, err := readBlockHeader(r, ix.Blocks[0], ix.USize(0))
	if err != nil {
		return nil, err
	}
	if d := dictCap(h, ix.USize(0)); d+inBufSize > budget {
		return nil, fmt.Errorf("decoding needs a %s LZMA2 dictionary, more than the cache size of %s (raise --cache-size)", bytesize.Words(d), bytesize.Words(budget))
	}
	s.first = h
	var largest int64
	for i := range ix.Blocks {
		largest = max(largest, ix.USize(i))
	}
	var warns []string
	cfg := compressed.Config{
		File: r, ReadOnly: ErrReadOnly, Release: ix.Release,
		Open:  s.openBlock,
		Cache: blockcache.Options{Budget: opts.CacheSize, Readahead: opts.Readahead, SpillDir: opts.TempDir, SpillLimit: opts.SpillLimit, SpillProgress: opts.Progress},
	}
	if len(ix.Blocks) == 1 {
		cfg.Segments = []blockcache.Segment{s.segment(0)}
		if w := compressed.SpillSingle(cfg.Segments, singleSpill, opts.Sequential, opts.TempDir, compressed.Names{Format: "xz", Segment: "block", Ext: ".xz"}); w != "" {
			warns = append(warns, w)
			largest = 0
		}
	} else {
		cfg.Table = table{s}
	}
	if largest > largeBlock {
		warns = append(warns, fmt.Sprintf("xz blocks of up to %s: a random read can decode a whole block (for fast random access repack with smaller blocks: nbdloop pack IMAGE -o NEW.xz)", bytesize.Words(largest)))
	}
	for _, c := range ix.Checks {
		if c != CheckNone && c != CheckCRC32 && c != CheckCRC64 && c != CheckSHA256 {
			warns = append(warns, fmt.Sprintf("xz check type %s is not verified", CheckName(c)))
			break
		}
	}
	cfg.Warnings = warns
	s.image, err = compressed.New(cfg)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// table is the index as the cache's table of segments, without a copy: a
// block's memory is estimated from the first block's header until its own
// is read.
type table struct{ s *Source }

func (t table) Len() int                         { return len(t.s.index.Blocks) }
func (t table) Segment(i int) blockcache.Segment { return t.s.segment(i) }

func (s *Source) segment(i int) blockcache.Segment {
	usize := s.index.USize(i)
	return blockcache.Segment{Off: s.index.Blocks[i].UOff, Size: usize, Mem: decoderMem(s.first, usize)}
}

func (s *Source) openBlock(i int) (io.Reader, error) {
	return newBlockReader(s.r, s.index.Blocks[i], s.index.USize(i), s.limit)
}

// Index returns the blocks found by Open.
func (s *Source) Index() *Index { return s.index }
