// Package compressed is what the compressed-image Sources (sources/xz,
// sources/gzip and sources/zstd) share at run time. A format package finds
// its segments (xz blocks, zstd frames, gzip checkpoint intervals), opens a
// decoder for one, and builds an Image with New; the Image is the
// read-only, parallel sources.Source over the blockcache.Cache of those
// segments, and the format's Source embeds it. SpillSingle is the policy for
// a file that is one large segment, and CountReader tells a decoder how far
// into its input it is.
//
// CorruptError is the one error of all three formats for data that breaks
// the format, at a byte of the compressed file; each format package
// exports it under its own name (a type alias) with ErrCorrupt, and keeps a
// decoder's own error (lzma2.ErrCorrupt, flate's) inside it for errors.Is.
//
// Every format passes its Options.SpillLimit (--spill-limit) as
// Config.Cache.SpillLimit: the temporary file of a one-segment image is
// bounded by it and by the free space of its directory (see
// blockcache.SpillBound), and an image declaring more is refused by New.
package compressed

import (
	"fmt"
	"io"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/blockcache"
)

// Config is what New builds an Image from.
type Config struct {
	// File is the compressed file. Close closes it if it is an io.Closer.
	File io.ReaderAt
	// ReadOnly is the error of every modifying call: the format's
	// ErrReadOnly, which wraps sources.ErrReadOnly.
	ReadOnly error
	// Segments (or Table, if not nil: a compact table of many segments),
	// Open and Cache make the blockcache.Cache that serves reads (see
	// blockcache.NewTable). Cache.SpillLimit bounds the temporary file of
	// Spill segments: New fails with a *blockcache.SpillError when they
	// are larger than the bound.
	Segments []blockcache.Segment
	Table    blockcache.Table
	Open     blockcache.Opener
	Cache    blockcache.Options
	// Warnings are what attach should tell the user, one line each.
	Warnings []string
	// Release, if not nil, frees what the decoders share (a decoder pool);
	// Close calls it once, after the cache has stopped its decoders.
	Release func()
}

// Image serves the uncompressed bytes of a compressed file as a read-only
// sources.Source whose methods may all be called in parallel, except Close.
// The zero Image is not usable: make one with New.
type Image struct {
	file     io.ReaderAt
	readOnly error
	cache    *blockcache.Cache
	warns    []string
	release  func()
}

// New returns the Image that serves c.Segments, decoded by c.Open, through
// one blockcache.Cache. It fails only where blockcache.New does; it neither
// closes c.File nor calls c.Release then.
func New(c Config) (Image, error) {
	var t blockcache.Table = blockcache.Slice(c.Segments)
	if c.Table != nil {
		t = c.Table
	}
	cache, err := blockcache.NewTable(t, c.Open, c.Cache)
	if err != nil {
		return Image{}, err
	}
	return Image{file: c.File, readOnly: c.ReadOnly, cache: cache, warns: c.Warnings, release: c.Release}, nil
}

// Stats returns the decode cache's counters.
func (m *Image) Stats() blockcache.Stats { return m.cache.Stats() }

// Warnings returns what attach should tell the user about the file, one
// line each.
func (m *Image) Warnings() []string { return m.warns }

// Size returns the uncompressed size.
func (m *Image) Size() int64 { return m.cache.Size() }

// Caps: read-only and parallel.
func (m *Image) Caps() sources.Caps { return sources.Caps{ReadOnly: true, Parallel: true} }

// ReadAt reads uncompressed bytes, decoding the segments it needs through
// the cache. A range outside the image fails with sources.ErrRange.
func (m *Image) ReadAt(p []byte, off int64) (int, error) {
	if err := sources.CheckRange(off, int64(len(p)), m.cache.Size()); err != nil {
		return 0, err
	}
	return m.cache.ReadAt(p, off)
}

// WriteAt fails with the format's ErrReadOnly.
func (m *Image) WriteAt([]byte, int64) (int, error) { return 0, m.readOnly }

// Flush does nothing: there is nothing to write.
func (m *Image) Flush() error { return nil }

// Trim fails with the format's ErrReadOnly.
func (m *Image) Trim(int64, int64) error { return m.readOnly }

// Zero fails with the format's ErrReadOnly.
func (m *Image) Zero(int64, int64, bool) error { return m.readOnly }

// Close stops the decoders, drops the cache, calls Config.Release and
// closes the file if it is an io.Closer. A second Close returns nil.
func (m *Image) Close() error {
	err := m.cache.Close()
	if m.release != nil {
		m.release()
		m.release = nil
	}
	if c, ok := m.file.(io.Closer); ok {
		if e := c.Close(); err == nil {
			err = e
		}
	}
	m.file = nil
	return err
}

// Names are how messages call a format and its parts.
type Names struct {
	Format  string // "xz"
	Segment string // what one segment is: "block", "frame"
	Ext     string // the extension of a repacked file: ".xz", ".zst"
}

// SpillSingle decides how a file that is one large segment is decoded.
// When segs is a single segment of more than threshold bytes and the file
// is not to be read sequentially, it marks that segment Spill (decoded
// once, in the background, into a temporary file in tempDir) and returns
// the warning that tells the user so and how to repack; otherwise it
// changes nothing and returns "".
func SpillSingle(segs []blockcache.Segment, threshold int64, sequential bool, tempDir string, n Names) string {
	if len(segs) != 1 || segs[0].Size <= threshold || sequential {
		return ""
	}
	segs[0].Spill = true
	if tempDir == "" {
		tempDir = "$TMPDIR"
	}
	return fmt.Sprintf("the %s file is a single %s %s: it is decoded once, in the background, into a temporary file in %s, and reads wait for it (for fast random access repack it: nbdloop pack IMAGE -o NEW%s)",
		n.Format, bytesize.Words(segs[0].Size), n.Segment, tempDir, n.Ext)
}

// CountReader counts the bytes read through it.
type CountReader struct {
	R io.Reader
	N int64 // bytes read so far
}

func (c *CountReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	return n, err
}
