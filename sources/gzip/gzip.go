// Package gzip serves the uncompressed contents of a gzip file as a
// read-only sources.Source with random access: `nbdloop attach
// disk.img.gz`. (The package is named after the format; import it as
// gzipsrc where compress/gzip is also used.)
//
// gzip has no random access of its own: deflate blocks start at bit
// offsets and refer back up to 32 KiB. Open therefore inflates the whole
// file once, without keeping or spilling the output (unlike nbdkit's gzip
// filter, which writes it all to $TMPDIR), checking every member's CRC32
// and size, and records checkpoints (klauspost/compress flate's
// WithEobCallback): every member start, and the end of the first deflate
// block at least Options.Interval bytes (4 MiB, more for files over 8 GiB
// compressed) after the previous checkpoint, with the 32 KiB window before
// it, kept deflated. A read then resumes from the nearest checkpoint before
// it (WithResumeFrom) and decodes at most one interval; decoded data is
// cached like xz's blocks (see blockcache): one budget for all connections,
// parallel decodes, readahead. Multi-member files (cat a.gz b.gz, pigz -i,
// BGZF) work the same way; trailing zeros or garbage after the last member
// are ignored with a warning, as gzip -d does.
//
// With Options.IndexDir set, the checkpoint index is saved in
// IndexDir/gzip-index and the next Open of the same file loads it instead
// of inflating. A saved index is looked up by the file's identity when r
// is an *os.File (device, inode, size, mtime, ctime: any write to the file
// changes its ctime) and by its size and first and last 64 KiB; the index
// records the SHA-256 of each segment's compressed bytes, and Open reads
// the whole file once (no inflating) to check them all before it uses the
// index; reads check a segment's again before they decode it, so a file
// changed while served fails reads rather than serving wrong bytes. The
// index file also records the identity and sample, and the SHA-256 of its
// own bytes. A saved index that does not match in any of these, or is
// damaged, truncated or crafted, is ignored and the index rebuilt.
// IndexDir and IndexDir/gzip-index are created 0700 and opened without
// following symbolic links; one that is a link, belongs to another user or
// is writable by group or others is not used (Open warns and keeps the
// index in memory only). After each save, indexes unused for MaxCacheAge
// (90 days) are removed, then the least recently used ones until the rest
// take at most MaxCacheBytes (1 GiB). attach uses $XDG_CACHE_HOME/nbdloop,
// else ~/.cache/nbdloop.
//
// The index kept in memory (a small record per checkpoint, and each
// checkpoint's 32 KiB window, deflated) is charged to Options.Budget, as
// it is found or before a saved one is read: a file whose index needs more
// is refused at open with the figures.
//
// Limits: Open takes one inflating pass over the whole file, on one core,
// when no saved index fits (its speed: docs/performance.md). Read-only:
// every modifying call fails with ErrReadOnly.
package gzip

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/flate"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/blockcache"
	"github.com/nbdloop/nbdloop/sources/internal/compressed"
)

// DefaultInterval is the default spacing of checkpoints in uncompressed
// bytes: a random read decodes 2 MiB on average (about 8 ms).
const DefaultInterval = 4 << 20

// maxCheckpoints: files so large that DefaultInterval would give more
// checkpoints get a longer interval, which bounds the windows' memory.
const maxCheckpoints = 8192

// ErrReadOnly is returned by every modifying call. It wraps
// sources.ErrReadOnly.
var ErrReadOnly = fmt.Errorf("gzip images are read-only (attach with -r, or add --filter cow for a writable overlay): %w", sources.ErrReadOnly)

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

// Options tune Open. The zero value is the default.
type Options struct {
	// CacheSize bounds the memory of decoded data, in bytes (0: the
	// blockcache default, 256 MiB).
	CacheSize int64
	// Interval is the checkpoint spacing in uncompressed bytes (0:
	// DefaultInterval, raised for very large files).
	Interval int64
	// IndexDir is where checkpoint indexes are kept ("": not kept).
	IndexDir string
	// Readahead is how many segments are decoded ahead of sequential reads
	// (0: GOMAXPROCS; -1: none).
	Readahead int
	// Budget is charged for the index kept in memory (nil: a budget of
	// sources.DefaultMetadataLimit for this file alone).
	Budget *sources.Budget
	// SpillLimit bounds temporary spill files as in the other compressed
	// formats (0: blockcache.DefaultSpillLimit). gzip segments are always
	// decoded through the cache, never spilled, so it bounds nothing
	// today; it is passed to the cache for uniformity.
	SpillLimit int64
	// Progress, when set, is told how far Open's passes over the file are:
	// the compressed bytes read and the total to read, which counts a pass
	// for checking a saved index, or one for inflating plus one for hashing
	// the index to save. Calls with one total come in order, done never
	// decreasing, the last with done == total; a saved index that does
	// not fit starts a new total (the passes that build one). Open makes
	// every call before it returns.
	Progress func(done, total int64)
}

// Source is a gzip file served uncompressed: a read-only sources.Source
// whose methods, except Close, may be called in parallel. ReadAt resumes
// from the nearest checkpoint before the range, through the shared cache;
// WriteAt, Trim and Zero fail with ErrReadOnly and Flush does nothing.
// Stats returns the decode cache's counters and Warnings what attach should
// tell the user, one line each. Close drops the cache and closes the file
// if it is an io.Closer; a second Close returns nil.
type Source struct {
	image  // Size, Caps, ReadAt, WriteAt, Flush, Trim, Zero, Close, Stats, Warnings
	r      io.ReaderAt
	size   int64 // of the gzip file
	ix     *index
	loaded bool
	charge *charger // what the index took from Options.Budget
}

// image is embedded under an unexported name, so that Source exports
// nothing but its methods.
type image = compressed.Image

// Open indexes the gzip file r of size bytes (see the package doc). If r
// is an io.Closer, Close closes it.
func Open(r io.ReaderAt, size int64, opts Options) (*Source, error) {
	var magic [3]byte
	if size < 18 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrNotGzip, size)
	}
	if _, err := r.ReadAt(magic[:], 0); err != nil {
		return nil, err
	}
	if magic != [3]byte{0x1F, 0x8B, 8} {
		return nil, fmt.Errorf("%w: no gzip magic at the start", ErrNotGzip)
	}
	budget := opts.Budget
	if budget == nil {
		budget = sources.NewBudget(0)
	}
	name := "the gzip file"
	if n, ok := r.(interface{ Name() string }); ok {
		name = n.Name()
	}
	s := &Source{r: r, size: size, charge: &charger{budget: budget}}
	src, err := s.open(opts, name)
	if err != nil {
		s.charge.undo(0)
		return nil, err
	}
	return src, nil
}

func (s *Source) open(opts Options, name string) (*Source, error) {
	r, size := s.r, s.size
	m := &meter{r: r, fn: opts.Progress, size: size}
	var warns []string
	var dir *cacheDir
	var key indexKey
	if opts.IndexDir != "" {
		var err error
		if dir, err = openCacheDir(opts.IndexDir); err != nil {
			warns = append(warns, fmt.Sprintf("%v; the index is kept in memory only", err))
		} else {
			defer dir.Close()
			key.id, key.hasID = fileIdentity(r, size)
			if key.sample, err = fileSample(r, size); err != nil {
				return nil, err
			}
			s.charge.what = "the saved gzip index of " + name
			m.plan(1)
			if s.ix = dir.load(key, m, size, s.charge); s.ix != nil {
				s.loaded = true
				m.passDone()
			}
		}
	}
	if s.ix == nil {
		interval := opts.Interval
		if interval <= 0 {
			// Compressed size times 4 estimates the uncompressed size.
			interval = max(int64(DefaultInterval), size*4/maxCheckpoints)
		}
		s.charge.what = fmt.Sprintf("the gzip index of %s (a checkpoint every %s of data, with its 32 KiB window)", name, bytesize.Words(interval))
		m.plan(1)
		if dir != nil {
			m.plan(2)
		}
		ix, err := buildIndex(m, size, interval, s.charge)
		if err != nil {
			return nil, err
		}
		m.passDone()
		s.ix = ix
		if dir != nil {
			err := ix.rangeHashes(m, size)
			m.passDone()
			if err == nil {
				err = dir.save(key, ix, size)
			}
			if err != nil {
				warns = append(warns, fmt.Sprintf("%v (the next attach indexes the file again)", err))
			}
		}
	}
	if s.ix.garbage > 0 {
		warns = append(warns, fmt.Sprintf("%d bytes after the last gzip member are not gzip data: ignored, as gzip -d does", s.ix.garbage))
	}
	var err error
	s.image, err = compressed.New(compressed.Config{
		File: r, ReadOnly: ErrReadOnly, Warnings: warns,
		Segments: s.ix.segments(size), Open: s.openSegment,
		Cache: blockcache.Options{Budget: opts.CacheSize, Readahead: opts.Readahead, SpillLimit: opts.SpillLimit},
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Close drops the cache, gives the index's memory back to Options.Budget
// and closes the file if it is an io.Closer. A second Close returns nil.
func (s *Source) Close() error {
	err := s.image.Close()
	s.charge.undo(0)
	return err
}

// segReader decodes one segment: its size in bytes, from its checkpoint,
// through as many members as the segment holds.
type segReader struct {
	fr   io.Reader     // the current member's inflater
	in   *bytes.Reader // the segment's compressed bytes
	base int64         // their file offset
	left int64         // bytes of the segment not yet returned
}

func (r *segReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if r.left == 0 {
			return 0, io.EOF
		}
		n, err := r.fr.Read(p[:min(int64(len(p)), r.left)])
		r.left -= int64(n)
		at := r.base + r.in.Size() - int64(r.in.Len())
		var fe flate.CorruptInputError
		switch {
		case r.left == 0:
			// The data the segment needs is all there; what follows
			// (a block cut by the segment's end) is not.
			err = nil
		case errors.As(err, &fe):
			return n, corrupt(at, "deflate data: %w", err)
		case err == io.ErrUnexpectedEOF:
			return n, corrupt(at, "deflate data ends early")
		case err == io.EOF && r.left > 0:
			// The member ends inside the segment: skip its trailer
			// and go on with the next member.
			if _, serr := r.in.Seek(8, io.SeekCurrent); serr != nil || r.in.Len() == 0 {
				return n, corrupt(at, "the segment ends inside a member trailer")
			}
			if _, herr := readHeader(r.in, at+8); herr != nil {
				return n, herr
			}
			r.fr.(flate.Resetter).Reset(r.in, nil)
			err = nil
		case err == io.EOF:
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
}

func (s *Source) openSegment(i int) (io.Reader, error) {
	cp := s.ix.cps[i]
	lo, hi := s.ix.compRange(i, s.size)
	buf := make([]byte, hi-lo)
	if _, err := s.r.ReadAt(buf, lo); err != nil && !(err == io.EOF && hi == s.size) {
		return nil, err
	}
	if s.ix.hashed && sha256.Sum256(buf) != cp.sum {
		return nil, corrupt(lo, "the file changed since it was indexed (its SHA-256 from byte %d to %d differs): detach and attach it again", lo, hi)
	}
	var window []byte
	if cp.window != nil {
		var err error
		window, err = io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(cp.window)), 64<<10))
		if err != nil || len(window) > 32<<10 {
			return nil, corrupt(lo, "damaged window in the gzip index")
		}
	}
	in := bytes.NewReader(buf)
	fr := flate.NewReaderOpts(in, flate.WithPartialBlock(), flate.WithResumeFrom(flate.InflateCheckpoint{
		UncompressedOffset: cp.uoff, CompressedOffset: lo, BitOffset: cp.bit, Window: window,
	}))
	end := s.ix.size
	if i+1 < len(s.ix.cps) {
		end = s.ix.cps[i+1].uoff
	}
	return &segReader{fr: fr, in: in, base: lo, left: end - cp.uoff}, nil
}

// Checkpoints returns how many places decoding can resume from.
func (s *Source) Checkpoints() int { return len(s.ix.cps) }

// Members returns the number of gzip members.
func (s *Source) Members() int { return s.ix.members }

// IndexLoaded reports whether Open found a saved index (no inflating pass).
func (s *Source) IndexLoaded() bool { return s.loaded }
