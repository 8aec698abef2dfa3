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
//     content size (zstd reading a pipe) is decoded once at Open to count
//     its bytes.
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
	frames   []Frame // the non-empty ones
	limit    int64
	seekable bool
	dec      *kzstd.Decoder // for DecodeAll, shared
}

// image is embedded under an unexported name, so that Source exports
// nothing but its methods.
type image = compressed.Image

// Open finds the frames of the zstd file r of size bytes. If r is an
// io.Closer, Close closes it.
func Open(r io.ReaderAt, size int64, opts Options) (*Source, error) {
	budget := opts.CacheSize
	if budget <= 0 {
		budget = blockcache.DefaultBudget
	}
	s := &Source{r: r, limit: budget}
	frames, seekable, err := seekTable(r, size)
	if err != nil {
		return nil, err
	}
	if !seekable {
		if frames, err = walkFrames(r, size); err != nil {
			return nil, err
		}
	}
	s.seekable = seekable
	s.dec, err = kzstd.NewReader(nil, kzstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		kzstd.WithDecoderMaxWindow(uint64(budget)), kzstd.WithDecoderMaxMemory(2*wholeFrame))
	if err != nil {
		return nil, err
	}
	var uoff int64
	for _, f := range frames {
		if f.USize < 0 {
			// No content size in the header: count the bytes once.
			n, err := s.count(f)
			if err != nil {
				s.dec.Close()
				return nil, err
			}
			f.USize = n
		}
		if f.USize == 0 {
			continue
		}
		// An RLE block of 4 bytes makes at most 128 KiB: a content size
		// beyond that ratio is a lie, and would size an allocation.
		if f.USize/(128<<10) > f.CSize/4+1 {
			s.dec.Close()
			return nil, corrupt(f.COff, "frame of %d bytes claims %d uncompressed bytes", f.CSize, f.USize)
		}
		if uoff > 1<<62-f.USize {
			s.dec.Close()
			return nil, corrupt(f.COff, "uncompressed size overflows")
		}
		f.UOff = uoff
		uoff += f.USize
		s.frames = append(s.frames, f)
	}
	if uoff == 0 {
		s.dec.Close()
		return nil, fmt.Errorf("zstd file holds no data: %w", sources.ErrEmpty)
	}
	segs := make([]blockcache.Segment, len(s.frames))
	for i, f := range s.frames {
		mem := f.CSize + f.USize
		if f.USize > wholeFrame {
			mem = max(f.Window, 1<<20) + 1<<20
		}
		segs[i] = blockcache.Segment{Off: f.UOff, Size: f.USize, Mem: mem}
	}
	var warns []string
	if w := compressed.SpillSingle(segs, singleSpill, opts.Sequential, opts.TempDir, compressed.Names{Format: "zstd", Segment: "frame", Ext: ".zst"}); w != "" {
		warns = append(warns, w)
	}
	s.image, err = compressed.New(compressed.Config{
		File: r, ReadOnly: ErrReadOnly, Warnings: warns, Release: s.dec.Close,
		Segments: segs, Open: s.openFrame,
		Cache: blockcache.Options{Budget: opts.CacheSize, Readahead: opts.Readahead, SpillDir: opts.TempDir},
	})
	if err != nil {
		s.dec.Close()
		return nil, err
	}
	return s, nil
}

// streamDecoder opens a streaming decoder of frame f.
func (s *Source) streamDecoder(f Frame) (*kzstd.Decoder, error) {
	return kzstd.NewReader(io.NewSectionReader(s.r, f.COff, f.CSize),
		kzstd.WithDecoderConcurrency(1), kzstd.WithDecoderLowmem(true), kzstd.WithDecoderMaxWindow(uint64(s.limit)))
}

// count decodes frame f to count its bytes.
func (s *Source) count(f Frame) (int64, error) {
	d, err := s.streamDecoder(f)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n, err := io.Copy(io.Discard, d)
	if err != nil {
		return 0, frameError(f, err)
	}
	return n, nil
}

func frameError(f Frame, err error) error {
	var ce *CorruptError
	if errors.As(err, &ce) {
		return err
	}
	return corrupt(f.COff, "frame of %d bytes: %v", f.CSize, err)
}

// frameReader yields exactly one frame's bytes and checks that the frame
// holds no more.
type frameReader struct {
	f    Frame
	r    io.Reader
	d    *kzstd.Decoder // streaming, closed by Close
	left int64
}

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

func (s *Source) openFrame(i int) (io.Reader, error) {
	f := s.frames[i]
	if f.USize > wholeFrame {
		d, err := s.streamDecoder(f)
		if err != nil {
			return nil, frameError(f, err)
		}
		return &frameReader{f: f, r: d, d: d, left: f.USize}, nil
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
	return &frameReader{f: f, r: bytes.NewReader(out), left: f.USize}, nil
}

// Frames returns the non-empty frames found by Open.
func (s *Source) Frames() []Frame { return s.frames }

// Seekable reports whether the file has a seek table.
func (s *Source) Seekable() bool { return s.seekable }
