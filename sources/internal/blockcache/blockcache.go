// Package blockcache serves random reads from a compressed image that is
// split into independently decodable segments (xz blocks, zstd frames, gzip
// checkpoint intervals). The format packages describe the segments and open a
// decoder for one; the Cache does the rest, for every connection at once:
//
//   - Decoded bytes are kept in chunks of Options.Chunk bytes (1 MiB) in one
//     LRU cache whose memory, decoders included, stays within Options.Budget.
//     All-zero chunks cost no memory.
//   - Different segments decode in parallel; a segment is never decoded twice
//     at once: a reader that needs a chunk that a running decode will produce
//     waits for it, and is served as soon as that chunk is out, not when the
//     segment is done.
//   - A decode of a large segment stops once its readers are served and parks
//     its decoder, so a later read further into the segment continues from
//     there instead of starting over (sequential reads through a large block
//     decode it once). Small segments are decoded to their end.
//   - When reads run sequentially, the segments ahead are decoded in the
//     background, up to Options.Readahead at once (all cores by default).
//   - A segment marked Spill (a whole image in one block) is decoded once, in
//     the background from the start, into a sparse temporary file; a read
//     waits until the decoder has passed its range. The spill file is
//     bounded (see Options.SpillLimit): a Spill segment larger than the
//     bound is refused by New, and a decode that would write past it fails.
//
// Memory: a decoder starts only when its memory (Segment.Mem) and a chunk
// fit in the budget (a decoder that reports its real memory once opened, see
// MemReader, is charged that instead, and waits for room like a new one) after evicting what can be evicted; otherwise it waits
// for a running one to end. Chunks that readers are waiting for are never
// evicted before they have them (so decodes cannot thrash). The budget is
// exceeded only by one decoder when nothing else runs, and by the chunks
// readers are waiting for.
//
// Errors: chunks are published as they are decoded, so a read can be
// served before the decoder has reached the segment's end and verified its
// checksum. A decode that fails drops every chunk of its segment, and the
// segment then fails every read (it is not decoded again).
package blockcache

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"sync"
	"syscall"
)

// Segment is one independently decodable piece of the uncompressed image.
// Segments are given in order and are contiguous: each starts where the
// previous one ends, the first at 0.
type Segment struct {
	Off  int64 // uncompressed offset
	Size int64 // uncompressed size, > 0
	// Mem is the memory a decoder of this segment holds besides its output
	// (an LZMA dictionary, a window), charged to the budget while it lives.
	Mem int64
	// Spill marks a segment that is decoded once, in the background, into
	// the spill file (see Options.SpillDir) instead of through the cache.
	Spill bool
}

// Table lists the segments of an image, for formats that keep them in a
// compact form of their own rather than as a []Segment (an index of
// millions of blocks). Segment(i) is called often, under the cache's lock:
// it must be cheap and must not block.
type Table interface {
	Len() int
	Segment(i int) Segment
}

// Slice is a Table over a []Segment.
type Slice []Segment

func (s Slice) Len() int              { return len(s) }
func (s Slice) Segment(i int) Segment { return s[i] }

// MemReader is implemented by decoders that know the memory they hold only
// once opened (the dictionary or window a block's header asks for): the
// cache charges Mem() instead of Segment.Mem from then on. Such a decoder
// should allocate that memory on its first Read, not in the Opener, since
// the cache may make it wait for room in between.
type MemReader interface {
	io.Reader
	Mem() int64
}

// Opener opens a decoder that yields segment i's bytes from its start. The
// decoder must return exactly Segments[i].Size bytes before it reports the
// end; it verifies what it can (checksums) when it reaches the end, and
// reports a mismatch as an error from the Read that returns the last bytes.
// If the returned reader is an io.Closer, it is closed when no longer used.
// Opener is called from many goroutines at once.
type Opener func(i int) (io.Reader, error)

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
	seg  int
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
		chunk: opts.Chunk, budget: opts.Budget, ahead: opts.Readahead,
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
		data, e := c.get(i, idx)
		if e != nil {
			return n, e
		}
		k := int(min(want, c.chunkLen(i, idx)-(rel-clo)))
		if data == nil {
			clear(p[n : n+k])
		} else {
			copy(p[n:n+k], data[rel-clo:])
		}
		n += k
	}
	return n, err
}

func (c *Cache) chunkLen(seg int, idx int64) int64 {
	return min(c.chunk, c.segs.Segment(seg).Size-idx*c.chunk)
}

// get returns chunk idx of segment seg (nil for zeros), decoding it if
// needed. The returned slice is never modified again.
func (c *Cache) get(seg int, idx int64) ([]byte, error) {
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
			c.readahead(seg, idx)
			return e.data, nil
		}
		if !missed {
			missed = true
			c.wanted[key]++
		}
		j := c.jobs[seg]
		if j == nil {
			if waited != nil && waited.err != nil {
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

// start starts a decode job for seg that will reach at least rel. It takes
// over the parked decoder if that is not past rel. c.mu is held.
func (c *Cache) start(seg int, rel int64, prefetch bool) *job {
	j := &job{seg: seg, want: rel, full: prefetch || c.segs.Segment(seg).Size <= min(fullDecodeMax, c.budget/4)}
	if cur := c.parked[seg]; cur != nil {
		delete(c.parked, seg)
		c.plru.Remove(cur.elem)
		if cur.pos <= rel {
			j.cur, j.pos = cur, cur.pos
			c.stats.Resumes++
		} else {
			c.used -= cur.mem
			go cur.close()
		}
	}
	if j.cur == nil {
		c.stats.Decodes++
		c.used += c.segs.Segment(seg).Mem // the decoder's memory, from now on
		c.peak()
	}
	if prefetch {
		c.stats.Prefetch++
	}
	c.jobs[seg] = j
	go c.run(j)
	return j
}

// admit reports whether a decode of seg that must reach rel can start
// within the budget, evicting what it can to make room. A decoder that
// would not fit waits for running ones to end; when none runs, it starts
// anyway (the budget is then exceeded by that one decoder). Resuming a
// parked decoder needs no new memory. c.mu is held.
func (c *Cache) admit(seg int, rel int64) bool {
	if cur := c.parked[seg]; cur != nil && cur.pos <= rel {
		return true
	}
	mem := c.segs.Segment(seg).Mem + min(c.chunk, c.segs.Segment(seg).Size)
	for c.used+mem > c.budget {
		if back := c.lru.Back(); back != nil {
			e := back.Value.(*entry)
			if c.wanted[e.key] == 0 {
				c.remove(e)
				continue
			}
		}
		if back := c.plru.Back(); back != nil {
			c.unpark(back.Value.(*cursor))
			continue
		}
		break
	}
	if c.used+mem <= c.budget {
		return true
	}
	return len(c.jobs) == 0
}

func (c *Cache) peak() {
	if c.used > c.stats.Peak {
		c.stats.Peak = c.used
	}
}

// run decodes for job j until its readers are served (or to the segment's
// end), publishing each chunk as soon as it is decoded.
func (c *Cache) run(j *job) {
	s := c.segs.Segment(j.seg)
	var err error
	opened := false
	if j.cur == nil {
		r, e := c.openSafe(j.seg)
		if e != nil {
			err = e
		} else {
			j.cur = &cursor{seg: j.seg, r: r, mem: s.Mem}
			opened = true
		}
	}
	c.mu.Lock()
	if opened {
		c.recharge(j.cur)
	}
	for err == nil {
		if c.closed || j.pos >= s.Size || (!j.full && j.pos >= j.want) {
			break
		}
		n := min(c.chunk, s.Size-j.pos)
		c.reserve(n)
		c.mu.Unlock()
		buf := make([]byte, n)
		_, err = readFull(j.cur.r, buf)
		zero := err == nil && isZero(buf)
		c.mu.Lock()
		c.used -= n // the reservation
		if err != nil {
			break
		}
		if zero {
			buf = nil
		}
		c.insert(ckey{j.seg, j.pos / c.chunk}, buf, n)
		j.pos += n
		j.cur.pos = j.pos
		c.cond.Broadcast()
	}
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("decoding bytes %d..%d: %w", s.Off, s.Off+s.Size, err)
		}
		j.err = err
		if !errors.Is(err, ErrClosed) {
			c.failed[j.seg] = err
		}
		// What this decode published may be corrupt: drop the segment.
		for idx := int64(0); idx*c.chunk < s.Size; idx++ {
			if e := c.chunks[ckey{j.seg, idx}]; e != nil {
				c.remove(e)
			}
		}
	}
	if j.cur != nil {
		if err == nil && !c.closed && j.pos < s.Size {
			c.park(j.cur)
		} else {
			c.used -= j.cur.mem
			go j.cur.close()
		}
	} else {
		c.used -= s.Mem
	}
	j.done = true
	delete(c.jobs, j.seg)
	c.cond.Broadcast()
	c.mu.Unlock()
}

// recharge charges the memory a new decoder reports (MemReader) instead of
// its segment's estimate, waiting for room as admit would: evicting what
// it can, then waiting for other decoders to end, unless none runs that is
// not itself waiting. c.mu is held.
func (c *Cache) recharge(cur *cursor) {
	m, ok := cur.r.(MemReader)
	if !ok {
		return
	}
	mem := max(m.Mem(), 0)
	extra := mem - cur.mem
	c.used += extra
	cur.mem = mem
	if extra <= 0 {
		return
	}
	c.used -= extra
	for {
		c.reserveEvict(extra)
		if c.used+extra <= c.budget || c.closed || len(c.jobs)-1-c.memWait <= 0 {
			break
		}
		c.memWait++
		c.cond.Wait()
		c.memWait--
	}
	c.used += extra
	c.peak()
}

// reserveEvict evicts unwanted chunks, then parked decoders, until n more
// bytes fit in the budget or nothing more can go. c.mu is held.
func (c *Cache) reserveEvict(n int64) {
	for skipped := 0; c.used+n > c.budget; {
		if back := c.lru.Back(); back != nil && skipped < c.lru.Len() {
			e := back.Value.(*entry)
			if c.wanted[e.key] > 0 {
				c.lru.MoveToFront(e.elem)
				skipped++
				continue
			}
			c.remove(e)
			continue
		}
		if back := c.plru.Back(); back != nil {
			c.unpark(back.Value.(*cursor))
			continue
		}
		return
	}
}

// openSafe opens segment i's decoder, turning a panic in a decoder of
// hostile input into an error.
func (c *Cache) openSafe(i int) (r io.Reader, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("decoder panicked: %v: %w", v, syscall.EIO)
		}
	}()
	r, err = c.open(i)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// readFull is io.ReadFull that turns a decoder panic into an error and an
// early end into io.ErrUnexpectedEOF.
func readFull(r io.Reader, buf []byte) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("decoder panicked: %v: %w", v, syscall.EIO)
		}
	}()
	// Not io.ReadFull: it drops an error that comes with the last bytes,
	// which is where decoders report a bad checksum.
	stalls := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF && n == len(buf) {
			return n, nil
		}
		if err == io.EOF {
			return n, io.ErrUnexpectedEOF
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			if stalls++; stalls > 100 {
				return n, io.ErrNoProgress
			}
		}
	}
	return n, nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// reserve makes room for n more bytes within the budget, evicting the least
// recently used chunks, then parked decoders, and charges n. c.mu is held.
func (c *Cache) reserve(n int64) {
	// Over budget after this: the decoders readers wait on must go on.
	c.reserveEvict(n)
	c.used += n
	c.peak()
}

func (c *Cache) insert(key ckey, data []byte, n int64) {
	if old := c.chunks[key]; old != nil {
		c.remove(old)
	}
	e := &entry{key: key, data: data, n: n}
	if data == nil {
		e.n = 0
	}
	c.reserve(e.n)
	e.elem = c.lru.PushFront(e)
	c.chunks[key] = e
}

func (c *Cache) remove(e *entry) {
	c.lru.Remove(e.elem)
	delete(c.chunks, e.key)
	c.used -= e.n
}

func (c *Cache) park(cur *cursor) {
	if old := c.parked[cur.seg]; old != nil {
		c.unpark(old)
	}
	cur.elem = c.plru.PushFront(cur)
	c.parked[cur.seg] = cur
	for c.plru.Len() > maxParked {
		c.unpark(c.plru.Back().Value.(*cursor))
	}
}

func (c *Cache) unpark(cur *cursor) {
	c.plru.Remove(cur.elem)
	delete(c.parked, cur.seg)
	c.used -= cur.mem
	go cur.close()
}

// readahead is called when chunk idx of seg is served. If the chunk before
// it was read too, reads are sequential: keep the decoders ahead busy.
// c.mu is held.
func (c *Cache) readahead(seg int, idx int64) {
	if c.ahead < 0 {
		return
	}
	prev := ckey{seg, idx - 1}
	if idx == 0 {
		if seg == 0 {
			return
		}
		prev = ckey{seg - 1, (c.segs.Segment(seg-1).Size - 1) / c.chunk}
	}
	if e := c.chunks[prev]; e == nil || !e.read {
		return
	}
	// Within a large segment: keep its decoder a few chunks ahead.
	s := c.segs.Segment(seg)
	if !s.Spill && s.Size > c.chunk*2 {
		ahead := min(s.Size, (idx+1+int64(c.ahead)*2)*c.chunk)
		if j := c.jobs[seg]; j != nil {
			j.want = max(j.want, ahead)
		} else if cur := c.parked[seg]; cur != nil && cur.pos < ahead && c.chunks[ckey{seg, cur.pos / c.chunk}] == nil {
			if c.admit(seg, ahead) {
				c.start(seg, ahead, false)
			}
		}
	}
	// The next segments, in parallel, within half the budget.
	var sum int64
	for k := seg + 1; k < c.segs.Len() && k <= seg+c.ahead; k++ {
		t := c.segs.Segment(k)
		if t.Spill {
			break
		}
		sum += t.Size + t.Mem
		if sum > c.budget/2 {
			break
		}
		if c.jobs[k] != nil || c.chunks[ckey{k, 0}] != nil {
			continue
		}
		if !c.admit(k, 0) {
			break
		}
		c.start(k, 0, true)
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
	c.cond.Broadcast()
	c.mu.Unlock()
	if c.spill != nil {
		return c.spill.close()
	}
	return nil
}

// spillDir is where spill files go by default: $TMPDIR, else /var/tmp
// (like nbdkit's LARGE_TMPDIR: /tmp is often a small tmpfs).
func spillDir() string {
	if d := os.Getenv("TMPDIR"); d != "" {
		return d
	}
	return "/var/tmp"
}
