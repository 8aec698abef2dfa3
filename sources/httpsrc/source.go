package httpsrc

import (
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/blockcache"
)

// ErrReadOnly is returned by every modifying call. It wraps
// sources.ErrReadOnly.
var ErrReadOnly = fmt.Errorf("objects by URL are read-only (add --filter cow for a writable overlay): %w", sources.ErrReadOnly)

// Source serves an Object as a read-only sources.Source whose methods may
// all be called in parallel, except Close.
type Source struct {
	obj    *Object
	cache  *blockcache.Cache
	pool   *Pool
	direct *direct // nil: every read goes through the cache

	closeOnce sync.Once
}

// Open stats the object at raw and returns its Source (Stat, then
// Object.Source with Options.Pool).
func Open(raw string, opts Options) (*Source, error) {
	return OpenObject(Stat(raw, opts))
}

// OpenObject returns the Source of o, as o.Source with the Options.Pool o
// was made with, and closes o when
// that fails; it passes err on when err is not nil. Open is
// OpenObject(Stat(...)), and so opens another store's Object.
func OpenObject(o *Object, err error) (*Source, error) {
	if err != nil {
		return nil, err
	}
	s, err := o.Source(o.opts.Pool)
	if err != nil {
		o.Close()
		return nil, err
	}
	return s, nil
}

// Pool is what the Sources of one device share: a memory budget for
// their caches, so that every object the device fetches (an image, its
// backing files, its extents) together stays within it, however many
// there are; and, for the objects opened with Options.Pool, one HTTP
// client, so that they hold at most Options.Connections connections
// together (closed when the last of the Pool's Sources closes). It is
// safe for concurrent use.
type Pool struct {
	p *blockcache.Pool

	mu     sync.Mutex
	client *http.Client // made by the first Stat with Options.Pool
	open   int          // Sources open
}

// NewPool returns a Pool of size bytes (DefaultCacheSize if size is 0 or
// less).
func NewPool(size int64) *Pool {
	if size <= 0 {
		size = DefaultCacheSize
	}
	return &Pool{p: blockcache.NewPool(size)}
}

// httpClient returns the Pool's client, made with opts the first time.
func (p *Pool) httpClient(opts Options) *http.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		p.client = newClient(opts)
	}
	return p.client
}

func (p *Pool) add() {
	p.mu.Lock()
	p.open++
	p.mu.Unlock()
}

// release counts a Source closed, and closes the idle connections of
// the Pool's client after the last one.
func (p *Pool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open--; p.open == 0 && p.client != nil {
		p.client.CloseIdleConnections()
	}
}

// Size is the Pool's bound in bytes.
func (p *Pool) Size() int64 { return p.p.Limit() }

// Stats returns the memory the Sources hold now (Used), the most they
// held (Peak), and how many are open.
func (p *Pool) Stats() blockcache.PoolStats { return p.p.Stats() }

// Source returns the Source that serves o through a cache whose memory
// comes from pool (nil: a Pool of Options.CacheSize of its own). Its Close
// closes o too. It fails for an object too large to serve.
func (o *Object) Source(pool *Pool) (*Source, error) {
	opts := o.opts
	if pool == nil {
		pool = NewPool(opts.CacheSize)
	}
	c, err := blockcache.NewTable(blocks{size: o.size, bs: opts.BlockSize}, o.openBlock, blockcache.Options{
		Budget: pool.Size(), Chunk: opts.BlockSize, Readahead: opts.Connections, Transient: true,
		OpenRun: o.openRun, RunMax: max(opts.RunSize, opts.BlockSize), Pool: pool.p,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %d bytes: too large to serve", o.name, o.size)
	}
	pool.add()
	return &Source{obj: o, cache: c, pool: pool, direct: newDirect(o)}, nil
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

// Pool is the Pool the Source's cache takes its memory from.
func (s *Source) Pool() *Pool { return s.pool }

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

// Lend returns the n bytes at off as slices of the cache's blocks, pinned
// there until release is called (once): the READ replies of an NBD server
// are written from them without a copy. The slices must not be modified
// nor used after release. Errors are those of ReadAt. A read of the size
// PipeRead takes starts no readahead: the blocks after it are left for
// PipeRead to read straight.
func (s *Source) Lend(off, n int64) (bufs [][]byte, release func(), err error) {
	if err := sources.CheckRange(off, n, s.obj.size); err != nil {
		return nil, nil, err
	}
	if d := s.direct; d != nil && d.takes(n) {
		// What comes after is PipeRead's, unless the cache has it: no
		// readahead that would keep the reads it takes in the cache.
		return s.cache.LendAlone(off, n)
	}
	return s.cache.Lend(off, n)
}

// PipeRead puts the n bytes at off into pipes straight from the server's
// answer, when the object is on a plain http server, the read is at least
// two blocks (and at most MaxDirectRead), and the cache has none of it
// nor is fetching any: a sequential reader of large blocks (a copy, a
// scan) then costs no copy through the process's memory, and takes no
// room in the cache for bytes it has passed. It returns the read ends of
// the pipes, which hold exactly the n bytes in order, and release, to call
// once when done with them (fds is not to be used after it). ok is false
// for any other read, and for one that failed that way: ReadAt or Lend
// then serves it through the cache.
func (s *Source) PipeRead(off, n int64) (fds []int, release func(), ok bool) {
	d := s.direct
	if d == nil || !d.takes(n) || off < 0 || off > s.obj.size-n || s.obj.replaced.Load() || !s.cache.Untouched(off, n) {
		return nil, nil, false
	}
	return d.read(off, n)
}

// DirectReads counts the reads PipeRead served.
func (s *Source) DirectReads() int64 {
	if s.direct == nil {
		return 0
	}
	return s.direct.reads.Load()
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
	if s.direct != nil {
		s.direct.close()
	}
	s.obj.Close()
	s.closeOnce.Do(s.pool.release)
	return err
}
