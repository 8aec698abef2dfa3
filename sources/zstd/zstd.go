// Package zstd serves the uncompressed contents of a zstd file as a
// read-only sources.Source with random access: `nbdloop attach
// disk.img.zst`. (The package is named after the format; it uses
// github.com/klauspost/compress/zstd to decode.)
//
// Random access is per frame, and Open finds the frames without decoding:
//
//   - The seekable format (contrib/seekable_format, written by `nbdloop
//     pack` and zstd-seekable tools): the seek table at the end lists every
//     frame's compressed and uncompressed size.
//   - Any other file of one or more frames (pzstd, cat a.zst b.zst, zstd
//     --block-size... ): the frame and block headers are walked from the
//     start; skippable frames are passed over. A frame whose header has no
//     content size (zstd reading a pipe) gets the size its blocks give
//     (the contract of sources.Source wants the size at open), after the
//     most they can hold has been checked against the spill bound: raw and
//     RLE blocks by their headers, compressed ones by a count that
//     produces no output, reading each block's literals section header
//     and the lengths of its sequences (FSE tables and bitstream, never
//     Huffman data). The count checks the structure it reads, each block
//     within min(window, 128 KiB), not the content: damaged literals,
//     offsets or checksums in such a frame are found by the first read of
//     it, as in any other frame.
//
// Frames up to 32 MiB are decoded whole with a shared DecodeAll; larger
// ones through a streaming decoder, incrementally. Decoded data is cached
// like xz's blocks (see blockcache): one budget for all connections,
// parallel decodes, readahead. A file that is a single large frame (plain
// `zstd disk.img`) is decoded once, in the background, into a sparse
// temporary file in Options.TempDir ($TMPDIR, else /var/tmp), each read
// waiting until the decoder has passed its range, and Warnings suggests
// repacking with `nbdloop pack`.
//
// Extents (for NBD block status and READ holes) reports as holes the
// frames that can only decode to zeros, as zstd and nbdloop pack write
// runs of zeros (RLE blocks of 0, compressed blocks whose literals are
// zeros), found from the block and literals headers of frames of at most
// 512 compressed bytes at Open (one small read each); everything else is
// data.
//
// Untrusted files: the frame table takes FrameBytes (32) per frame,
// charged to Options.Budget before it is allocated; a content size that
// the frame's blocks cannot hold is refused at open, and so is a single
// frame to be spilled, or frames to be counted, beyond the spill bound
// (Options.SpillLimit and the free space of TempDir, see
// blockcache.SpillBound). A block larger than min(window, 128 KiB) is
// refused at open. Nothing is decoded at open: counting a frame takes
// memory of fixed size and work in proportion to its compressed bytes,
// and a frame to be counted whose window is larger than the cache size
// (which no read of it could decode) is refused. A streaming decoder is
// charged its frame's window once it reads the header.
//
// Limits: frames that need a dictionary are refused. Frame checksums are
// verified by the decoder; the seek table's optional per-frame checksums
// are not. Read-only: every modifying call fails with ErrReadOnly.
package zstd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"

	kzstd "github.com/klauspost/compress/zstd"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/blockcache"
	"github.com/nbdloop/nbdloop/sources/internal/compressed"
)

// wholeFrame: frames up to this size are decoded with DecodeAll.
const wholeFrame = 32 << 20

// singleSpill: a file that is one frame larger than this is decoded into
// the spill file rather than through the cache.
var singleSpill int64 = 32 << 20

// ErrReadOnly is returned by every modifying call. It wraps
// sources.ErrReadOnly.
var ErrReadOnly = fmt.Errorf("zstd images are read-only (attach with -r, or add --filter cow for a writable overlay): %w", sources.ErrReadOnly)

// Options tune Open. The zero value is the default.
type Options struct {
	// CacheSize bounds the memory of decoded data and decoders, in bytes
	// (0: the blockcache default, 256 MiB).
	CacheSize int64
	// TempDir is where a single-frame file is decoded to ("": $TMPDIR,
	// else /var/tmp).
	TempDir string
	// Readahead is how many frames are decoded ahead of sequential reads
	// (0: GOMAXPROCS; -1: none).
	Readahead int
	// Sequential tells that the file will be read once, in order: a
	// single large block is then decoded as the reads go, not into a
	// temporary file.
	Sequential bool
	// Budget is the device's metadata memory budget, charged for the
	// frame table (nil: a budget of sources.DefaultMetadataLimit of its
	// own). The charge is released by Close.
	Budget *sources.Budget
	// SpillLimit bounds the temporary file of a single-frame file and the
	// bytes counted in frames without a content size (0:
	// blockcache.DefaultSpillLimit, 64 GiB; negative: only the free space
	// of TempDir bounds them). See blockcache.SpillBound.
	SpillLimit int64
	// Progress, when set, is told how far the background decode of a
	// single-frame file into TempDir is: the uncompressed bytes decoded and
	// the file's uncompressed size, after each chunk and done == total at
	// the end (see blockcache.Options.SpillProgress). Files read through
	// the cache report nothing.
	Progress func(done, total int64)
	// Name names the file in messages ("": the name of r if it has one).
	Name string
}

// Source is a zstd file served uncompressed: a read-only sources.Source
// whose methods, except Close, may be called in parallel. ReadAt decodes
// the frames it needs through the shared cache; WriteAt, Trim and Zero fail
// with ErrReadOnly and Flush does nothing. Stats returns the decode cache's
// counters and Warnings what attach should tell the user, one line each.
// Close stops the decoders, drops the cache and closes the file if it is
// an io.Closer; a second Close returns nil.
type Source struct {
	image    // Size, Caps, ReadAt, WriteAt, Flush, Trim, Zero, Close, Stats, Warnings
	r        io.ReaderAt
	frames   []frame // the non-empty ones
	size     int64
	limit    int64
	seekable bool
	dec      *kzstd.Decoder // for DecodeAll, shared
}

// image is embedded under an unexported name, so that Source exports
// nothing but its methods.
type image = compressed.Image

// frame is a frame as a Source keeps it (FrameBytes): its uncompressed
// size is where the next one starts; zero is set when it is made of RLE
// blocks of zeros only (isZeroFrame).
type frame struct {
	uoff, coff, csize int64
	zero              bool
}

// frameTable collects frames, charging the budget before it grows.
type frameTable struct {
	frames  []frame
	budget  *sources.Budget
	what    string
	charged int64
	bound   int64 // the Bounds of the frames of unknown size, added up
}

func (t *frameTable) reserve(n int) error {
	if cap(t.frames)-len(t.frames) >= n {
		return nil
	}
	c := max(len(t.frames)+n, min(2*cap(t.frames), maxFrames))
	need := int64(c) * FrameBytes
	if err := t.budget.Charge(need, fmt.Sprintf("the frame table of %s (%d frames)", t.what, len(t.frames)+n)); err != nil {
		return err
	}
	nf := make([]frame, len(t.frames), c)
	copy(nf, t.frames)
	t.budget.Release(t.charged)
	t.charged = need
	t.frames = nf
	return nil
}

// add keeps f, its uncompressed size (or -1) in uoff until Open adds them
// up.
func (t *frameTable) add(f Frame) error {
	if len(t.frames) == cap(t.frames) {
		if err := t.reserve(max(16, len(t.frames))); err != nil {
			return err
		}
	}
	t.frames = append(t.frames, frame{uoff: f.USize, coff: f.COff, csize: f.CSize})
	t.bound += f.Bound
	return nil
}

func (t *frameTable) release() {
	t.budget.Release(t.charged)
	t.charged = 0
}

// Open finds the frames of the zstd file r of size bytes. If r is an
// io.Closer, Close closes it.
func Open(r io.ReaderAt, size int64, opts Options) (*Source, error) {
	t := &frameTable{budget: opts.Budget, what: opts.Name}
	if t.budget == nil {
		t.budget = sources.NewBudget(0)
	}
	if n, ok := r.(interface{ Name() string }); ok && t.what == "" {
		t.what = n.Name()
	}
	if t.what == "" {
		t.what = "the zstd file"
	}
	s, err := open(r, size, opts, t)
	if err != nil {
		t.release()
		return nil, err
	}
	return s, nil
}

func open(r io.ReaderAt, size int64, opts Options, t *frameTable) (*Source, error) {
	budget := opts.CacheSize
	if budget <= 0 {
		budget = blockcache.DefaultBudget
	}
	s := &Source{r: r, limit: budget}
	seekable, err := seekTable(r, size, t.reserve, t.add)
	if err != nil {
		return nil, err
	}
	if !seekable {
		if err = walkFrames(r, size, t.add); err != nil {
			return nil, err
		}
	}
	s.seekable = seekable
	if t.bound > 0 {
		// Frames without a content size are counted here: within the
		// spill bound only.
		b, err := blockcache.SpillBound(opts.TempDir, opts.SpillLimit)
		if err != nil {
			return nil, err
		}
		if t.bound > b.Bytes {
			return nil, fmt.Errorf("zstd frames without a content size may hold up to %s, and %s: raise --spill-limit, set TMPDIR to a larger filesystem, or repack the image (nbdloop pack)", bytesize.Words(t.bound), b)
		}
	}
	s.dec, err = kzstd.NewReader(nil, kzstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		kzstd.WithDecoderMaxWindow(uint64(budget)), kzstd.WithDecoderMaxMemory(2*wholeFrame))
	if err != nil {
		return nil, err
	}
	s.frames, err = s.layout(t.frames, t.bound)
	if err != nil {
		s.dec.Close()
		return nil, err
	}
	cfg := compressed.Config{
		File: r, ReadOnly: ErrReadOnly, Release: func() { s.dec.Close(); t.release() },
		Open:  s.openFrame,
		Cache: blockcache.Options{Budget: opts.CacheSize, Readahead: opts.Readahead, SpillDir: opts.TempDir, SpillLimit: opts.SpillLimit, SpillProgress: opts.Progress},
	}
	if len(s.frames) == 1 {
		cfg.Segments = []blockcache.Segment{s.segment(0)}
		if w := compressed.SpillSingle(cfg.Segments, singleSpill, opts.Sequential, opts.TempDir, compressed.Names{Format: "zstd", Segment: "frame", Ext: ".zst"}); w != "" {
			cfg.Warnings = append(cfg.Warnings, w)
		}
	} else {
		cfg.Table = table{s}
	}
	s.image, err = compressed.New(cfg)
	if err != nil {
		s.dec.Close()
		return nil, err
	}
	return s, nil
}

// layout counts the frames of unknown size, drops the empty ones and turns
// the sizes kept in uoff into offsets.
func (s *Source) layout(fs []frame, bound int64) ([]frame, error) {
	kept := 0
	var uoff int64
	var c *counter
	for _, f := range fs {
		usize := f.uoff
		if usize < 0 {
			// No content size in the header: count the bytes from the
			// block headers and sequences, within what the blocks of
			// all such frames can hold.
			if c == nil {
				c = newCounter(s.r, s.limit)
			}
			n, err := c.frame(Frame{COff: f.coff, CSize: f.csize}, bound)
			if err != nil {
				return nil, err
			}
			usize = n
			bound -= n
		}
		if usize == 0 {
			continue
		}
		// An RLE block of 4 bytes makes at most 128 KiB: a content size
		// beyond that ratio is a lie, and would size an allocation.
		if usize/maxBlock > f.csize/4+1 {
			return nil, corrupt(f.coff, "frame of %d bytes claims %d uncompressed bytes", f.csize, usize)
		}
		if uoff > 1<<62-usize {
			return nil, corrupt(f.coff, "the frames' uncompressed sizes add up to more than 2^62 bytes")
		}
		fs[kept] = frame{uoff: uoff, coff: f.coff, csize: f.csize, zero: isZeroFrame(s.r, f.coff, f.csize)}
		kept++
		uoff += usize
	}
	if uoff == 0 {
		return nil, fmt.Errorf("zstd file holds no data: %w", sources.ErrEmpty)
	}
	s.size = uoff
	return fs[:kept], nil
}

// usize is the uncompressed size of frame i.
func (s *Source) usize(i int) int64 {
	if i+1 < len(s.frames) {
		return s.frames[i+1].uoff - s.frames[i].uoff
	}
	return s.size - s.frames[i].uoff
}

// table is the frames as the cache's table of segments, without a copy.
type table struct{ s *Source }

func (t table) Len() int                         { return len(t.s.frames) }
func (t table) Segment(i int) blockcache.Segment { return t.s.segment(i) }

// segment is frame i as a cache segment. A streaming decoder is charged
// 2 MiB until it reads its frame's window (frameReader.Mem).
func (s *Source) segment(i int) blockcache.Segment {
	f, usize := s.frames[i], s.usize(i)
	mem := f.csize + usize
	if usize > wholeFrame {
		mem = 2 << 20
	}
	return blockcache.Segment{Off: f.uoff, Size: usize, Mem: mem}
}

// streamDecoder opens a streaming decoder of frame f.
func (s *Source) streamDecoder(f Frame) (*kzstd.Decoder, error) {
	return kzstd.NewReader(io.NewSectionReader(s.r, f.COff, f.CSize),
		kzstd.WithDecoderConcurrency(1), kzstd.WithDecoderLowmem(true), kzstd.WithDecoderMaxWindow(uint64(s.limit)))
}

func frameError(f Frame, err error) error {
	var ce *CorruptError
	if errors.As(err, &ce) {
		return err
	}
	return corrupt(f.COff, "frame of %d bytes: %w", f.CSize, err)
}

// frameReader yields exactly one frame's bytes and checks that the frame
// holds no more.
type frameReader struct {
	f    Frame
	r    io.Reader
	d    *kzstd.Decoder // streaming, closed by Close
	mem  int64          // for a streaming decoder: what its window takes
	left int64
}

// Mem is the memory a streaming decoder holds: its frame's window and a
// block buffer of 1 MiB. (Whole-frame decodes are charged by their segment.)
func (fr *frameReader) Mem() int64 { return fr.mem }

func (fr *frameReader) Read(p []byte) (int, error) {
	if fr.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > fr.left {
		p = p[:fr.left]
	}
	n, err := fr.r.Read(p)
	fr.left -= int64(n)
	if err == io.EOF && fr.left > 0 {
		return n, corrupt(fr.f.COff, "frame ends after %d of its %d bytes", fr.f.USize-fr.left, fr.f.USize)
	}
	if err != nil && err != io.EOF {
		return n, frameError(fr.f, err)
	}
	if fr.left == 0 && fr.d != nil {
		var one [1]byte
		if k, err := fr.d.Read(one[:]); k != 0 || err != io.EOF {
			if k != 0 {
				return n, corrupt(fr.f.COff, "frame holds more than %d bytes", fr.f.USize)
			}
			return n, frameError(fr.f, err)
		}
	}
	return n, nil
}

func (fr *frameReader) Close() error {
	if fr.d != nil {
		fr.d.Close()
	}
	return nil
}

// frameAt returns frame i.
func (s *Source) frameAt(i int) Frame {
	f := s.frames[i]
	return Frame{COff: f.coff, CSize: f.csize, UOff: f.uoff, USize: s.usize(i)}
}

func (s *Source) openFrame(i int) (io.Reader, error) {
	f := s.frameAt(i)
	if f.USize > wholeFrame {
		var hb [18]byte
		n, err := s.r.ReadAt(hb[:min(f.CSize, 18)], f.COff)
		if err != nil && !(err == io.EOF && n > 0) {
			return nil, err
		}
		h, err := parseFrameHeader(hb[:n])
		if err != nil {
			return nil, corrupt(f.COff, "%w", err)
		}
		if h.window > s.limit {
			return nil, corrupt(f.COff, "frame needs a %s window, more than the cache size of %s (raise --cache-size)", bytesize.Words(h.window), bytesize.Words(s.limit))
		}
		// klauspost's decoder starts reading when first read: the window
		// is allocated after the cache has charged Mem.
		d, err := s.streamDecoder(f)
		if err != nil {
			return nil, frameError(f, err)
		}
		return &frameReader{f: f, r: d, d: d, left: f.USize, mem: max(h.window, 1<<20) + 1<<20}, nil
	}
	in := make([]byte, f.CSize)
	if _, err := s.r.ReadAt(in, f.COff); err != nil {
		return nil, err
	}
	out, err := s.dec.DecodeAll(in, make([]byte, 0, f.USize))
	if err != nil {
		return nil, frameError(f, err)
	}
	if int64(len(out)) != f.USize {
		return nil, corrupt(f.COff, "frame holds %d bytes, the index says %d", len(out), f.USize)
	}
	return &wholeReader{bytes.NewReader(out)}, nil
}

// wholeReader serves a frame decoded whole (charged by its segment).
type wholeReader struct{ *bytes.Reader }

// Frames returns the non-empty frames found by Open (a copy, made at each
// call: for tests and tools).
func (s *Source) Frames() []Frame {
	fs := make([]Frame, len(s.frames))
	for i := range fs {
		fs[i] = s.frameAt(i)
	}
	return fs
}

// Seekable reports whether the file has a seek table.
func (s *Source) Seekable() bool { return s.seekable }
