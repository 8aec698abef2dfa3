package blockcache

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// spill decodes the Spill segments once, in the background, into a sparse
// temporary file laid out like the uncompressed image, and serves reads of
// those segments from it as soon as the decoder has passed them.
type spill struct {
	c *Cache
	f *os.File

	mu       sync.Mutex
	cond     *sync.Cond
	frontier map[int]int64 // per spill segment: decoded up to (relative)
	errs     map[int]error
	bound    Bound // what the file may hold
	written  int64 // bytes written to the file (all-zero chunks are not)
	closed   bool
	wg       sync.WaitGroup

	progMu   sync.Mutex // serializes progress
	progress func(done, total int64)
	total    int64 // bytes of the spill segments
}

// SpillMargin is the free space a spill file leaves in its filesystem: 1
// GiB, or a tenth of the filesystem if that is less.
const SpillMargin = 1 << 30

// Bound is how much a spill file may hold, and why.
type Bound struct {
	Dir    string
	Bytes  int64 // the bound: min(Limit, Free-Margin), at least 0
	Limit  int64 // the configured limit (Options.SpillLimit or DefaultSpillLimit), -1 for none
	Free   int64 // free space in Dir when measured
	Margin int64 // what is left free
}

func (b Bound) String() string {
	lim := "none"
	if b.Limit >= 0 {
		lim = bytesize.Words(b.Limit)
	}
	return fmt.Sprintf("at most %s may be decoded into %s (--spill-limit %s; %s free there, of which %s is left free)",
		bytesize.Words(b.Bytes), b.Dir, lim, bytesize.Words(b.Free), bytesize.Words(b.Margin))
}

// SpillBound returns the bound of a spill file in dir ("" for the default,
// $TMPDIR or /var/tmp) under limit (Options.SpillLimit): the smaller of
// limit and the free space of dir less SpillMargin.
func SpillBound(dir string, limit int64) (Bound, error) {
	if dir == "" {
		dir = spillDir()
	}
	if limit == 0 {
		limit = DefaultSpillLimit
	}
	if limit < 0 {
		limit = -1
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Bound{}, fmt.Errorf("measuring the free space for temporary files in %s: %w (set TMPDIR to a directory with room for the image)", dir, err)
	}
	b := Bound{Dir: dir, Limit: limit}
	bs := int64(st.Bsize)
	b.Free = int64(min(st.Bavail, uint64(1<<62/max(bs, 1)))) * bs
	total := int64(min(st.Blocks, uint64(1<<62/max(bs, 1)))) * bs
	b.Margin = min(SpillMargin, total/10)
	b.Bytes = max(b.Free-b.Margin, 0)
	if limit >= 0 {
		b.Bytes = min(b.Bytes, limit)
	}
	return b, nil
}

// SpillError is the error of New for Spill segments larger than the spill
// bound, and of reads of a spill segment whose decode ran past it.
type SpillError struct {
	Size  int64 // what was to be decoded into the file (at New), or written (at a read)
	Bound Bound
	Open  bool // at New: the declared size; else the decode ran past the bound
}

func (e *SpillError) Error() string {
	if e.Open {
		return fmt.Sprintf("the image's %s of uncompressed data would be decoded into a temporary file, but %s: raise --spill-limit, set TMPDIR to a larger filesystem, or repack the image with smaller blocks (nbdloop pack)",
			bytesize.Words(e.Size), e.Bound)
	}
	return fmt.Sprintf("the temporary file of the decoded image reached its bound after %s: %s (raise --spill-limit or set TMPDIR elsewhere, or repack the image: nbdloop pack): %v",
		bytesize.Words(e.Size), e.Bound, syscall.EIO)
}

// Unwrap makes a decode that ran past the bound an I/O error (EIO to the
// reader).
func (e *SpillError) Unwrap() error {
	if e.Open {
		return nil
	}
	return syscall.EIO
}

func newSpill(c *Cache, dir string, limit, size int64, progress func(done, total int64)) (*spill, error) {
	if dir == "" {
		dir = spillDir()
	}
	bound, err := SpillBound(dir, limit)
	if err != nil {
		return nil, err
	}
	if size > bound.Bytes {
		return nil, &SpillError{Size: size, Bound: bound, Open: true}
	}
	f, err := openTemp(dir)
	if err != nil {
		return nil, fmt.Errorf("creating the temporary file for decoding a single-block image: %w (set TMPDIR to a directory with room for the image)", err)
	}
	if err := f.Truncate(c.size); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing the temporary file in %s to %d bytes: %w (set TMPDIR to a filesystem with room for the image)", dir, c.size, err)
	}
	sp := &spill{c: c, f: f, frontier: map[int]int64{}, errs: map[int]error{}, bound: bound, progress: progress, total: size}
	sp.cond = sync.NewCond(&sp.mu)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range c.segs.Len() {
		if !c.segs.Segment(i).Spill {
			continue
		}
		sp.frontier[i] = 0
		sp.wg.Add(1)
		go func() {
			defer sp.wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			sp.decode(i)
		}()
	}
	return sp, nil
}

// openTemp opens an unnamed file in dir (O_TMPFILE), or a named one that is
// removed at once where the filesystem lacks O_TMPFILE.
func openTemp(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), dir+"/(nbdloop spill)"), nil
	}
	f, err := os.CreateTemp(dir, "nbdloop-spill-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

func (sp *spill) decode(i int) {
	c := sp.c
	s := c.segs.Segment(i)
	mem := s.Mem
	c.mu.Lock()
	c.used += mem
	c.stats.Decodes++
	c.peak()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.used -= mem
		c.mu.Unlock()
	}()
	fail := func(err error) {
		sp.mu.Lock()
		var se *SpillError
		if errors.As(err, &se) {
			sp.errs[i] = err
		} else {
			sp.errs[i] = fmt.Errorf("decoding bytes %d..%d: %w", s.Off, s.Off+s.Size, err)
		}
		sp.cond.Broadcast()
		sp.mu.Unlock()
	}
	r, err := c.openSafe(i)
	if err != nil {
		fail(err)
		return
	}
	cur := &cursor{r: r, mem: mem}
	defer cur.close()
	if m, ok := r.(MemReader); ok {
		// The spill decoder runs whatever the budget: charge what it
		// really holds.
		c.mu.Lock()
		c.used += max(m.Mem(), 0) - mem
		mem = max(m.Mem(), 0)
		c.peak()
		c.mu.Unlock()
	}
	buf := make([]byte, c.chunk)
	for pos := int64(0); pos < s.Size; {
		if sp.isClosed() {
			return
		}
		n := min(c.chunk, s.Size-pos)
		if _, err := readFull(r, buf[:n]); err != nil {
			fail(err)
			return
		}
		if !isZero(buf[:n]) {
			if err := sp.store(buf[:n], s.Off+pos); err != nil {
				fail(err)
				return
			}
		}
		pos += n
		sp.advance(i, pos)
		sp.report()
	}
}

// report tells Options.SpillProgress how far the decode is.
func (sp *spill) report() {
	if sp.progress == nil {
		return
	}
	sp.progMu.Lock()
	defer sp.progMu.Unlock()
	sp.progress(sp.doneBytes(), sp.total)
}

func (sp *spill) isClosed() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.closed
}

// store writes a decoded chunk that is not all zeros at off in the file,
// failing with a *SpillError if the file would grow past its bound.
func (sp *spill) store(buf []byte, off int64) error {
	n := int64(len(buf))
	sp.mu.Lock()
	over := sp.written+n > sp.bound.Bytes
	if !over {
		sp.written += n
	}
	sp.mu.Unlock()
	if over {
		return &SpillError{Size: sp.written, Bound: sp.bound}
	}
	if _, err := sp.f.WriteAt(buf, off); err != nil {
		return fmt.Errorf("writing the temporary file: %w", err)
	}
	return nil
}

// advance records that spill segment i is decoded up to rel, waking the
// reads waiting for it.
func (sp *spill) advance(i int, rel int64) {
	sp.mu.Lock()
	sp.frontier[i] = rel
	sp.cond.Broadcast()
	sp.mu.Unlock()
}

// read fills p from spill segment i at rel once it is decoded.
func (sp *spill) read(p []byte, i int, rel int64) error {
	end := rel + int64(len(p))
	sp.mu.Lock()
	for sp.frontier[i] < end {
		if sp.closed {
			sp.mu.Unlock()
			return ErrClosed
		}
		if err := sp.errs[i]; err != nil {
			sp.mu.Unlock()
			return err
		}
		sp.cond.Wait()
	}
	sp.mu.Unlock()
	_, err := sp.f.ReadAt(p, sp.c.segs.Segment(i).Off+rel)
	return err
}

func (sp *spill) doneBytes() int64 {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	var n int64
	for _, f := range sp.frontier {
		n += f
	}
	return n
}

func (sp *spill) close() error {
	sp.mu.Lock()
	sp.closed = true
	sp.cond.Broadcast()
	sp.mu.Unlock()
	sp.wg.Wait()
	return sp.f.Close()
}

// spillDir is where spill files go by default: $TMPDIR, else /var/tmp
// (like nbdkit's LARGE_TMPDIR: /tmp is often a small tmpfs).
func spillDir() string {
	if d := os.Getenv("TMPDIR"); d != "" {
		return d
	}
	return "/var/tmp"
}
