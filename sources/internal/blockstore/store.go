package blockstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Options describe the object whose blocks a Store keeps, and its bound.
type Options struct {
	// Dir is the directory the user named.
	Dir string
	// Location names the object (its URL): the file's name is a hash of
	// it.
	Location string
	// Pin names the version of the object (at most MaxPin bytes); Size
	// is its size and BlockSize the unit of storing (every block but the
	// last is BlockSize bytes).
	Pin       string
	Size      int64
	BlockSize int64
	// Limit bounds the bytes of blocks kept (at least one block is).
	Limit int64
	// Logf receives a line for each block that failed its check; nil
	// discards them.
	Logf func(format string, args ...any)
}

const (
	// MaxPin bounds Options.Pin.
	MaxPin = 1024
	// maxSlots bounds the table, whatever Limit says.
	maxSlots = 1 << 20
	// maxBlock bounds the block size.
	maxBlock = 64 << 20
	// lockWait is how long Open waits for another process's lock.
	lockWait = 3 * time.Second
)

// ErrBusy is the error of Open when another process uses the object's
// file.
var ErrBusy = errors.New("the cache file is in use by another process")

// Stats are counters for tests and logs.
type Stats struct {
	Hits    int64 // blocks read back and verified
	Stored  int64 // blocks written
	Corrupt int64 // blocks read back that failed their check
	Slots   int   // slots in the file
	Held    int   // blocks held now
}

// Store keeps the blocks of one object in its file. Its methods are safe
// for concurrent use.
type Store struct {
	f       *os.File
	name    string // the file's path, for messages
	bs      int64
	size    int64
	nblocks int64
	dataOff int64
	logf    func(format string, args ...any)

	mu     sync.Mutex
	slots  []slot
	slotOf map[int64]int32 // block -> slot, for held and pending blocks
	free   []int32         // slots known free (a hint: checked when taken)
	hand   int

	broken                atomic.Bool // a write failed: store nothing more
	hits, stored, corrupt atomic.Int64
}

// slot is one slot of the file as the Store knows it.
type slot struct {
	block   int64 // -1: free
	n       uint32
	crc     uint32
	readers int32
	writing bool // reserved by Reserve, not yet committed
	ref     bool // read since the clock last passed
}

// Open opens (creating it if needed) the file of the object opts
// describes in opts.Dir, after checking the directory and the file (see
// the package doc). A file that holds another version is emptied.
func Open(opts Options) (*Store, error) {
	if opts.BlockSize <= 0 || opts.BlockSize > maxBlock || opts.Size <= 0 || len(opts.Pin) > MaxPin {
		return nil, fmt.Errorf("blockstore: block size %d, size %d or pin of %d bytes out of range", opts.BlockSize, opts.Size, len(opts.Pin))
	}
	dir, err := openDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	sum := sha256.Sum256([]byte(opts.Location))
	f, err := openFile(dir, opts.Dir, fileName(sum), unix.O_CREAT)
	if err != nil {
		return nil, err
	}
	s := newStore(f, opts)
	if err := s.load(opts.Pin, sum); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func newStore(f *os.File, opts Options) *Store {
	nblocks := (opts.Size + opts.BlockSize - 1) / opts.BlockSize
	n := max(1, min(opts.Limit/opts.BlockSize, nblocks, maxSlots))
	s := &Store{
		f: f, name: f.Name(), bs: opts.BlockSize, size: opts.Size, nblocks: nblocks,
		slots: make([]slot, n), slotOf: make(map[int64]int32, n), logf: opts.Logf,
	}
	s.dataOff = roundUp(headerSize+recordSize*int64(n), 4096)
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	for i := range s.slots {
		s.slots[i].block = -1
	}
	s.free = make([]int32, 0, n)
	return s
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// openDir opens the directory the user named and refuses one that
// others may write.
func openDir(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("cache directory %s: %w (create it: mkdir -m 700 %s)", path, err, path)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("cache directory %s: %w", path, err)
	}
	if st.Mode&0o022 != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("cache directory %s: writable by its group or by others (mode %o): refused, since its files are trusted (chmod go-w %s, or name a directory of your own)", path, st.Mode&0o7777, path)
	}
	if uid := uint32(os.Geteuid()); st.Uid != uid && st.Uid != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("cache directory %s: belongs to user %d, not to %d or root: refused (name a directory of your own)", path, st.Uid, uid)
	}
	return fd, nil
}

// fileName is the name of the file of the object whose location hashes
// to sum.
func fileName(sum [32]byte) string { return hex.EncodeToString(sum[:20]) + ".blocks" }

// openFile opens (or, with create O_CREAT, creates 0600) the file base
// beneath dir without following a symbolic link, takes its lock and
// checks it.
func openFile(dir int, dirPath, base string, create int) (*os.File, error) {
	name := dirPath + "/" + base
	fd, err := unix.Openat(dir, base, unix.O_RDWR|create|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache file %s: %w (remove it if it is not a file of nbdloop's)", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("cache file %s: %w", name, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = errors.New("not a regular file")
	case st.Uid != uint32(os.Geteuid()):
		err = fmt.Errorf("belongs to user %d", st.Uid)
	case st.Mode&0o7777 != 0o600:
		err = fmt.Errorf("mode %o, not 600", st.Mode&0o7777)
	case st.Nlink != 1:
		err = fmt.Errorf("%d links to it", st.Nlink)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cache file %s: %v: refused (remove it)", name, err)
	}
	if err := lock(fd); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("cache file %s: %w", name, ErrBusy)
		}
		return nil, fmt.Errorf("cache file %s: locking: %w", name, err)
	}
	return f, nil
}

// lock takes the file's lock, waiting up to lockWait for a process that
// holds it to end (a server handing the device over to the next).
func lock(fd int) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close closes the file. A second Close returns an error.
func (s *Store) Close() error { return s.f.Close() }

// Name is the file's path.
func (s *Store) Name() string { return s.name }

// Stats returns the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	held := 0
	for _, sl := range s.slots {
		if sl.block >= 0 && !sl.writing {
			held++
		}
	}
	s.mu.Unlock()
	return Stats{Hits: s.hits.Load(), Stored: s.stored.Load(), Corrupt: s.corrupt.Load(), Slots: len(s.slots), Held: held}
}

// blockLen is the length of block b.
func (s *Store) blockLen(b int64) int64 { return min(s.bs, s.size-b*s.bs) }
