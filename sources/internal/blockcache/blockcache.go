package blockcache

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
	"syscall"

	"github.com/nbdloop/nbdloop/internal/freelist"
)

// Options tune a Cache. The zero value picks the defaults.
type Options struct {
	// Budget bounds the memory of cached chunks plus live decoders, in
	// bytes. 0 means DefaultBudget. See the package doc for the two ways
	// it can be exceeded.
	Budget int64
	// Chunk is the unit of caching, in bytes. 0 means DefaultChunk.
	Chunk int64
	// Readahead is how many segments ahead of a sequential reader are
	// decoded in the background. 0 means GOMAXPROCS; -1 disables it.
	Readahead int
	// SpillDir is the directory of the spill file for Spill segments
	// ("" means $TMPDIR, or /var/tmp). The file is unlinked at once and
	// sparse: all-zero chunks are never written.
	SpillDir string
	// SpillLimit bounds the spill file, in bytes (0 means
	// DefaultSpillLimit; negative means no limit but the free space). The
	// bound is the smaller of SpillLimit and the free space of SpillDir
	// less a margin (SpillMargin): New refuses Spill segments whose sizes
	// add up to more, and a decode that would write more fails its reads.
	SpillLimit int64
	// SpillProgress, when set, is told how far the background decode of
	// the Spill segments is: after each chunk, the bytes decoded so far and
	// the Spill segments' total size, done == total at the end. Calls are
	// serialized, done never decreases, and it is called from the
	// decoding goroutines: it must not call the Cache.
	SpillProgress func(done, total int64)
	// Transient: a failed decode is not remembered, and the next read
	// that needs the segment opens it again (segments fetched over a
	// network, whose failures pass). Without it a failed segment fails
	// every later read.
	Transient bool
	// OpenRun, when set, fetches the segments ahead of a sequential
	// reader in runs (see the package doc): one decoder for many
	// segments, each published as it comes, instead of one decoder per
	// segment. For segments that are slices of one stream (a remote
	// object in blocks), where one long request beats many short ones.
	OpenRun RunOpener
	// RunMax bounds a run, in bytes (0 means DefaultRunMax).
	RunMax int64
	// Pool, when set, is a budget this Cache shares with others: its
	// chunks and decoders count in the Pool too, and make room there as
	// in Budget (which still bounds this Cache alone).
	Pool *Pool
}

const (
	// DefaultBudget is the default memory budget: room for a few dozen
	// 4 MiB blocks, or a handful of xz -9's 64 MiB dictionaries.
	DefaultBudget = 256 << 20
	// DefaultChunk is the default caching unit.
	DefaultChunk = 1 << 20
	// fullDecodeMax: segments up to this size are decoded to their end once
	// started (later reads of the same block are then hits); larger ones
	// stop when their readers are served, and park the decoder.
	fullDecodeMax = 32 << 20
	// maxParked bounds the parked decoders, whatever their memory.
	maxParked = 16
	// DefaultSpillLimit is the default bound of the spill file: 64 GiB
	// (less if SpillDir has less room, see SpillBound).
	DefaultSpillLimit = 64 << 30
)

// ErrClosed is returned by reads after Close.
var ErrClosed = errors.New("blockcache: closed")

// Stats are counters for tests, benchmarks and logs.
type Stats struct {
	Decodes   int64 // decodes started from a segment's start
	Resumes   int64 // decodes that continued a parked decoder
	Prefetch  int64 // decodes started by readahead
	Runs      int64 // runs started by readahead (Options.OpenRun)
	Hits      int64 // chunk lookups served from the cache
	Misses    int64 // chunk lookups that waited for a decode
	Used      int64 // bytes held now: chunks, decoders, reservations
	Peak      int64 // the largest Used seen
	Budget    int64 // the effective budget
	SpillDone int64 // bytes of spill segments decoded so far
}

// Cache serves reads over segments. All methods are safe for concurrent
// use.
type Cache struct {
	segs   Table
	size   int64
	open   Opener
	chunk  int64
	budget int64
	ahead  int
	// transient: failed segments are opened again (Options.Transient).
	transient bool
	openRun   RunOpener
	runMax    int64
	pool      *Pool
	charged   int64 // c.used as last counted in pool
	runFront  int   // the segment after the last run

	mu     sync.Mutex
	cond   *sync.Cond
	chunks map[ckey]*entry
	lru    list.List // of *entry, front = most recently used
	// wanted counts the readers waiting for each chunk: those chunks are
	// not evicted before their readers have them, or a decode that
	// outruns the budget would throw away what it was started for.
	wanted map[ckey]int
	used   int64
	jobs   map[int]*job
	// memWait counts the jobs waiting for room for the memory their
	// decoder reported once opened.
	memWait int
	failed  map[int]error // segments whose decode failed: later reads fail at once
	parked  map[int]*cursor
	plru    list.List // of *cursor, front = most recently parked
	closed  bool
	stats   Stats
	// keep asks remove for the buffer of the chunk it drops, in spare,
	// while a decode reserves room for its next chunk: the decode then
	// writes into it instead of allocating one.
	keep  bool
	spare []byte
	loans freelist.List[loan]
	zeros []byte // a chunk of zeros for the loans of zero chunks

	spill *spill
}

type ckey struct {
	seg int
	idx int64
}

type entry struct {
	key  ckey
	data []byte // nil: zeros
	n    int64
	elem *list.Element
	read bool // served to a reader (for sequential detection)
	// refs counts the readers copying data or the loans holding it: a
	// pinned entry is not evicted, and one dropped while pinned (gone)
	// keeps its memory charged until the last unpin.
	refs int
	gone bool
}

type cursor struct {
	seg  int
	pos  int64
	r    io.Reader
	mem  int64
	elem *list.Element
}

func (c *cursor) close() {
	if cl, ok := c.r.(io.Closer); ok {
		cl.Close()
	}
}

type job struct {
	seg  int     // the segment being decoded
	end  int     // a run's end (exclusive), 0 for one segment
	cur  *cursor // nil until opened
	pos  int64   // decoded up to here (segment-relative)
	want int64   // decode at least up to this segment-relative offset
	full bool    // decode to the end
	err  error
	done bool
}

// New returns a Cache over segs, whose decoders open opens.
func New(segs []Segment, open Opener, opts Options) (*Cache, error) {
	return NewTable(Slice(segs), open, opts)
}

// NewTable returns a Cache over the segments of segs, whose decoders open
// opens. It fails if the segments do not follow each other from 0, or if
// the Spill segments do not fit in the spill bound (a *SpillError).
func NewTable(segs Table, open Opener, opts Options) (*Cache, error) {
	c := &Cache{
		segs: segs, open: open,
		chunk: opts.Chunk, budget: opts.Budget, ahead: opts.Readahead, transient: opts.Transient,
		openRun: opts.OpenRun, runMax: opts.RunMax, pool: opts.Pool,
		chunks: make(map[ckey]*entry),
		wanted: make(map[ckey]int),
		jobs:   make(map[int]*job),
		failed: make(map[int]error),
		parked: make(map[int]*cursor),
	}
	c.cond = sync.NewCond(&c.mu)
	if c.chunk <= 0 {
		c.chunk = DefaultChunk
	}
	if c.budget <= 0 {
		c.budget = DefaultBudget
	}
	if c.ahead == 0 {
		c.ahead = runtime.GOMAXPROCS(0)
	}
	if c.runMax <= 0 {
		c.runMax = DefaultRunMax
	}
	var off, spills int64
	for i := range segs.Len() {
		s := segs.Segment(i)
		if s.Off != off || s.Size <= 0 || s.Size > 1<<62-off || s.Mem < 0 {
			return nil, fmt.Errorf("blockcache: segment %d at %d+%d does not follow the previous one (ending at %d)", i, s.Off, s.Size, off)
		}
		off += s.Size
		if s.Spill {
			spills += s.Size
		}
	}
	c.size = off
	c.stats.Budget = c.budget
	if spills > 0 {
		sp, err := newSpill(c, opts.SpillDir, opts.SpillLimit, spills, opts.SpillProgress)
		if err != nil {
			return nil, err
		}
		c.spill = sp
	}
	return c, nil
}

// Size is the uncompressed size: the end of the last segment.
func (c *Cache) Size() int64 { return c.size }

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Used = c.used
	if c.spill != nil {
		s.SpillDone = c.spill.doneBytes()
	}
	return s
}

// find returns the segment holding off.
func (c *Cache) find(off int64) int {
	return sort.Search(c.segs.Len(), func(i int) bool { s := c.segs.Segment(i); return s.Off+s.Size > off }) // first segment ending after off
}

// ReadAt fills p with the uncompressed bytes at off. It follows io.ReaderAt,
// except that a read past the end fails with io.EOF and fills nothing.
func (c *Cache) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blockcache: negative offset %d: %w", off, syscall.EINVAL)
	}
	if off >= c.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := 0
	var err error
	if int64(len(p)) > c.size-off {
		p = p[:c.size-off]
		err = io.EOF
	}
	for n < len(p) {
		pos := off + int64(n)
		i := c.find(pos)
		s := c.segs.Segment(i)
		rel := pos - s.Off
		want := min(int64(len(p)-n), s.Size-rel)
		if s.Spill {
			if e := c.spill.read(p[n:n+int(want)], i, rel); e != nil {
				return n, e
			}
			n += int(want)
			continue
		}
		idx := rel / c.chunk
		clo := idx * c.chunk
		ent, e := c.get(i, idx, true)
		if e != nil {
			return n, e
		}
		k := int(min(want, c.chunkLen(i, idx)-(rel-clo)))
		if ent.data == nil {
			clear(p[n : n+k])
		} else {
			copy(p[n:n+k], ent.data[rel-clo:])
		}
		c.unpin(ent)
		n += k
	}
	return n, err
}

func (c *Cache) chunkLen(seg int, idx int64) int64 {
	return min(c.chunk, c.segs.Segment(seg).Size-idx*c.chunk)
}

// get returns the entry of chunk idx of segment seg (data nil for zeros),
// decoding it if needed, pinned: its data is not modified before the
// caller's unpin. With ahead, serving it may start the readahead of a
// sequential reader.
func (c *Cache) get(seg int, idx int64, ahead bool) (*entry, error) {
	key := ckey{seg, idx}
	c.mu.Lock()
	defer c.mu.Unlock()
	var waited *job
	missed := false
	defer func() {
		if missed {
			if c.wanted[key]--; c.wanted[key] == 0 {
				delete(c.wanted, key)
			}
		}
	}()
	for {
		if c.closed {
			return nil, ErrClosed
		}
		if e := c.chunks[key]; e != nil {
			c.lru.MoveToFront(e.elem)
			if missed {
				c.stats.Misses++
			} else {
				c.stats.Hits++
			}
			e.read = true
			e.refs++
			if ahead {
				c.readahead(seg, idx)
			}
			return e, nil
		}
		if !missed {
			missed = true
			c.wanted[key]++
		}
		j := c.jobs[seg]
		if j == nil {
			if waited != nil && waited.err != nil && (waited.end == 0 || waited.seg == seg) {
				return nil, waited.err
			}
			if err := c.failed[seg]; err != nil {
				return nil, err
			}
			if !c.admit(seg, idx*c.chunk) {
				// No room for another decoder: wait for one to end.
				c.cond.Wait()
				continue
			}
			j = c.start(seg, idx*c.chunk, false)
		}
		if j.pos <= idx*c.chunk {
			// The job will produce the chunk: ask it to go at least that far.
			j.want = max(j.want, min((idx+1)*c.chunk, c.segs.Segment(seg).Size))
		}
		// Otherwise the job is past the chunk, which was evicted: wait for
		// the job to end, then start over.
		waited = j
		c.cond.Wait()
	}
}

// Close stops the decoders and drops the cache. Reads waiting for a decode
// return ErrClosed.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for _, cur := range c.parked {
		c.unpark(cur)
	}
	for len(c.jobs) > 0 {
		c.cond.Broadcast()
		c.cond.Wait()
	}
	c.chunks = map[ckey]*entry{}
	c.lru.Init()
	c.spare = nil
	c.leave()
	c.used = 0
	c.cond.Broadcast()
	c.mu.Unlock()
	if c.spill != nil {
		return c.spill.close()
	}
	return nil
}

// Untouched reports whether the cache has none of the bytes [off, off+n):
// no chunk of the range is cached, and no decode is producing one. A
// caller that reads such a range some other way (and does not keep it)
// takes nothing from the cache, and duplicates none of its work.
func (c *Cache) Untouched(off, n int64) bool {
	if n <= 0 || off < 0 || off+n > c.size {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	first, last := c.find(off), c.find(off+n-1)
	for _, j := range c.jobs {
		if j.seg <= last && max(j.end, j.seg+1) > first {
			return false
		}
	}
	for i := first; i <= last; i++ {
		s := c.segs.Segment(i)
		if s.Spill {
			return false
		}
		lo, hi := max(off, s.Off)-s.Off, min(off+n, s.Off+s.Size)-s.Off
		for idx := lo / c.chunk; idx*c.chunk < hi; idx++ {
			if c.chunks[ckey{i, idx}] != nil {
				return false
			}
		}
	}
	return true
}
