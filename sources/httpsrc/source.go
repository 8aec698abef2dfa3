package httpsrc

import (
	"fmt"
	"io"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/blockcache"
)

// ErrReadOnly is returned by every modifying call. It wraps
// sources.ErrReadOnly.
var ErrReadOnly = fmt.Errorf("objects by URL are read-only (add --filter cow for a writable overlay): %w", sources.ErrReadOnly)

// Source serves an Object as a read-only sources.Source whose methods may
// all be called in parallel, except Close.
type Source struct {
	obj   *Object
	cache *blockcache.Cache
}

// Open stats the object at raw and returns its Source (Stat, then
// Object.Source).
func Open(raw string, opts Options) (*Source, error) {
	o, err := Stat(raw, opts)
	if err != nil {
		return nil, err
	}
	s, err := o.Source(0)
	if err != nil {
		o.Close()
		return nil, err
	}
	return s, nil
}

// Source returns the Source that serves o through a cache of cacheSize
// bytes (0: Options.CacheSize). Its Close closes o too. It fails for an
// object too large to serve.
func (o *Object) Source(cacheSize int64) (*Source, error) {
	opts := o.opts
	if cacheSize <= 0 {
		cacheSize = opts.CacheSize
	}
	c, err := blockcache.NewTable(blocks{size: o.size, bs: opts.BlockSize}, o.openBlock, blockcache.Options{
		Budget: cacheSize, Chunk: opts.BlockSize, Readahead: opts.Connections, Transient: true,
		OpenRun: o.openRun, RunMax: max(opts.RunSize, opts.BlockSize),
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %d bytes: too large to serve", o.name, o.size)
	}
	return &Source{obj: o, cache: c}, nil
}

// blocks is the object cut into blocks of bs bytes (the last one shorter).
type blocks struct{ size, bs int64 }

func (b blocks) Len() int { return int((b.size + b.bs - 1) / b.bs) }

func (b blocks) Segment(i int) blockcache.Segment {
	off := int64(i) * b.bs
	return blockcache.Segment{Off: off, Size: min(b.bs, b.size-off)}
}

// openBlock is the cache's Opener: the range request of block i.
func (o *Object) openBlock(i int) (io.Reader, error) {
	s := blocks{size: o.size, bs: o.opts.BlockSize}.Segment(i)
	if o.store != nil {
		return &blockReader{o: o, b: int64(i), off: s.Off, end: s.Off + s.Size, slot: -1}, nil
	}
	return o.reader(s.Off, s.Off+s.Size), nil
}

// openRun is the cache's RunOpener: one range request for blocks
// first..first+n-1, or with a store, their blocks from the store until
// one is missing, then one request for the rest.
func (o *Object) openRun(first, n int) (io.Reader, error) {
	bs := o.opts.BlockSize
	off, end := int64(first)*bs, min(int64(first+n)*bs, o.size)
	if o.store != nil {
		return &storedRun{o: o, b: int64(first), last: int64(first + n), end: end}, nil
	}
	return o.runReader(off, end), nil
}

// Object returns the object the Source serves.
func (s *Source) Object() *Object { return s.obj }

// Name is the URL as given.
func (s *Source) Name() string { return s.obj.name }

// Warnings are what attach should tell the user, one line each.
func (s *Source) Warnings() []string { return s.obj.warns }

// Stats returns the cache's counters.
func (s *Source) Stats() blockcache.Stats { return s.cache.Stats() }

// Size is the object's size.
func (s *Source) Size() int64 { return s.obj.size }

// Caps: read-only and parallel.
func (s *Source) Caps() sources.Caps { return sources.Caps{ReadOnly: true, Parallel: true} }

// ReadAt reads the object's bytes at off through the cache. A range
// outside the object fails with sources.ErrRange; a block that cannot be
// fetched fails the read with an error that wraps EIO.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if err := sources.CheckRange(off, int64(len(p)), s.obj.size); err != nil {
		return 0, err
	}
	return s.cache.ReadAt(p, off)
}

// WriteAt fails with ErrReadOnly.
func (s *Source) WriteAt([]byte, int64) (int, error) { return 0, ErrReadOnly }

// Flush does nothing: there is nothing to write.
func (s *Source) Flush() error { return nil }

// Trim fails with ErrReadOnly.
func (s *Source) Trim(int64, int64) error { return ErrReadOnly }

// Zero fails with ErrReadOnly.
func (s *Source) Zero(int64, int64, bool) error { return ErrReadOnly }

// Close stops the fetches in flight, drops the cache and closes the idle
// connections. A second Close returns nil.
func (s *Source) Close() error {
	err := s.cache.Close()
	s.obj.Close()
	return err
}
