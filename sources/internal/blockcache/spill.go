package blockcache

import (
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
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
	closed   bool
	wg       sync.WaitGroup
}

func newSpill(c *Cache, dir string) (*spill, error) {
	if dir == "" {
		dir = spillDir()
	}
	f, err := openTemp(dir)
	if err != nil {
		return nil, fmt.Errorf("creating the temporary file for decoding a single-block image: %w (set TMPDIR to a directory with room for the image)", err)
	}
	if err := f.Truncate(c.size); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing the temporary file in %s to %d bytes: %w (set TMPDIR to a filesystem with room for the image)", dir, c.size, err)
	}
	sp := &spill{c: c, f: f, frontier: map[int]int64{}, errs: map[int]error{}}
	sp.cond = sync.NewCond(&sp.mu)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, s := range c.segs {
		if !s.Spill {
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
	s := c.segs[i]
	c.mu.Lock()
	c.used += s.Mem
	c.stats.Decodes++
	c.peak()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.used -= s.Mem
		c.mu.Unlock()
	}()
	fail := func(err error) {
		sp.mu.Lock()
		sp.errs[i] = fmt.Errorf("decoding bytes %d..%d: %w", s.Off, s.Off+s.Size, err)
		sp.cond.Broadcast()
		sp.mu.Unlock()
	}
	r, err := c.openSafe(i)
	if err != nil {
		fail(err)
		return
	}
	cur := &cursor{r: r}
	defer cur.close()
	buf := make([]byte, c.chunk)
	for pos := int64(0); pos < s.Size; {
		sp.mu.Lock()
		closed := sp.closed
		sp.mu.Unlock()
		if closed {
			return
		}
		n := min(c.chunk, s.Size-pos)
		if _, err := readFull(r, buf[:n]); err != nil {
			fail(err)
			return
		}
		if !isZero(buf[:n]) {
			if _, err := sp.f.WriteAt(buf[:n], s.Off+pos); err != nil {
				fail(fmt.Errorf("writing the temporary file: %w", err))
				return
			}
		}
		pos += n
		sp.mu.Lock()
		sp.frontier[i] = pos
		sp.cond.Broadcast()
		sp.mu.Unlock()
	}
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
	_, err := sp.f.ReadAt(p, sp.c.segs[i].Off+rel)
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
