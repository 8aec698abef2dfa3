package gzip

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// The checkpoint index of a gzip file can be kept in a cache directory
// (Options.IndexDir), so that the next Open of the same file needs no
// inflating pass. See the package doc for what is kept, how a saved index
// is matched to its file and how the directory is guarded and pruned.

const (
	indexMagic = "nbdloop gzip index 2\n"
	// maxIndexFile bounds one saved index (the file is read whole).
	maxIndexFile = 512 << 20
	// cacheSubdir is the directory in IndexDir that holds the indexes.
	cacheSubdir = "gzip-index"
	// MaxCacheBytes and MaxCacheAge bound the index cache: after each save,
	// indexes unused for MaxCacheAge are removed, then the least recently
	// used ones until the rest take at most MaxCacheBytes.
	MaxCacheBytes = 1 << 30
	MaxCacheAge   = 90 * 24 * time.Hour
	// staleTemp: temporary files of saves that died are removed after this.
	staleTemp = time.Hour
	// cpMem is what one checkpoint costs in memory, window aside.
	cpMem = int64(unsafe.Sizeof(checkpoint{}))
)

// identity names a file as the kernel does: a saved index is used for a
// file with the same identity only. Any write to the file changes its
// ctime, which no one but root can set back.
type identity struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64 // nanoseconds since 1970
}

// fileIdentity returns the identity of r when r is an *os.File (whose
// ReadAt offsets are file offsets), or false.
func fileIdentity(r io.ReaderAt, size int64) (identity, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return identity{}, false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != size {
		return identity{}, false
	}
	return identity{
		Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(),
	}, true
}

// sampleBytes is how much of each end of the file the key holds.
const sampleBytes = 64 << 10

// fileSample hashes the file's size and first and last 64 KiB: which saved
// index to look at. It proves nothing; load then checks every byte.
func fileSample(r io.ReaderAt, size int64) ([32]byte, error) {
	h := sha256.New()
	var sum [32]byte
	binary.Write(h, binary.LittleEndian, size)
	for _, off := range []int64{0, max(0, size-sampleBytes)} {
		if _, err := io.Copy(h, io.NewSectionReader(r, off, min(sampleBytes, size))); err != nil {
			return sum, err
		}
	}
	h.Sum(sum[:0])
	return sum, nil
}

// indexKey names the saved index of a file: its identity if it has one,
// and a sample of its bytes.
type indexKey struct {
	id     identity
	hasID  bool
	sample [32]byte
}

func (k indexKey) name() string {
	h := sha256.New()
	binary.Write(h, binary.LittleEndian, k.hasID)
	binary.Write(h, binary.LittleEndian, k.id)
	h.Write(k.sample[:])
	return fmt.Sprintf("%x.idx", h.Sum(nil)[:16])
}

// verifyAll checks every checkpoint's compressed range against its
// SHA-256: the file holds exactly the deflate data the index was made from.
func (ix *index) verifyAll(r io.ReaderAt, size int64) bool {
	buf := make([]byte, 256<<10)
	for i := range ix.cps {
		lo, hi := ix.compRange(i, size)
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(r, lo, hi-lo), buf); err != nil {
			return false
		}
		var sum [32]byte
		if h.Sum(sum[:0]); sum != ix.cps[i].sum {
			return false
		}
	}
	return true
}

// marshal encodes the index for the file of key, of fileSize bytes.
func (ix *index) marshal(key indexKey, fileSize int64) []byte {
	var b bytes.Buffer
	b.WriteString(indexMagic)
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	w(fileSize)
	w(key.hasID)
	w(key.id)
	w(key.sample)
	w(ix.size)
	w(uint32(ix.members))
	w(ix.garbage)
	w(uint32(len(ix.cps)))
	for _, cp := range ix.cps {
		w(cp.uoff)
		w(cp.coff)
		w(cp.bit)
		w(cp.sum)
		w(cp.memberEnd)
		w(uint32(len(cp.window)))
		b.Write(cp.window)
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}

var errBadIndex = errors.New("gzip index file is damaged")

// cpEntry is the size of one checkpoint in an index file, window aside.
const cpEntry = 8 + 8 + 1 + 32 + 8 + 4

// unmarshalIndex decodes an index file and checks it against the gzip file
// of key, of fileSize bytes: the file's SHA-256, its identity, and every
// field's range, so that a damaged or hostile index file can neither make
// reads go outside the file nor allocate more than charge allows. The
// windows returned are slices of data.
func unmarshalIndex(data []byte, key indexKey, fileSize int64, charge func(int64) error) (*index, error) {
	if len(data) < len(indexMagic)+32 || !bytes.HasPrefix(data, []byte(indexMagic)) {
		return nil, errBadIndex
	}
	body, sum := data[:len(data)-32], data[len(data)-32:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, errBadIndex
	}
	rest := body[len(indexMagic):]
	rd := func(v any) error {
		n := binary.Size(v)
		if n < 0 || n > len(rest) {
			return errBadIndex
		}
		_, err := binary.Decode(rest[:n], binary.LittleEndian, v)
		rest = rest[n:]
		return err
	}
	var fsize, size, garbage int64
	var members, n uint32
	var saved indexKey
	for _, v := range []any{&fsize, &saved.hasID, &saved.id, &saved.sample, &size, &members, &garbage, &n} {
		if err := rd(v); err != nil {
			return nil, errBadIndex
		}
	}
	if saved != key || fsize != fileSize || size <= 0 || garbage < 0 || garbage >= fileSize || members == 0 || int64(members) > fileSize/18 {
		return nil, errBadIndex
	}
	if n == 0 || int64(n) > int64(len(rest))/cpEntry {
		return nil, errBadIndex
	}
	if err := charge(int64(n) * cpMem); err != nil {
		return nil, err
	}
	ix := &index{size: size, members: int(members), garbage: garbage, cps: make([]checkpoint, n)}
	for i := range ix.cps {
		cp := &ix.cps[i]
		var wlen uint32
		for _, v := range []any{&cp.uoff, &cp.coff, &cp.bit, &cp.sum, &cp.memberEnd, &wlen} {
			if err := rd(v); err != nil {
				return nil, errBadIndex
			}
		}
		if int64(wlen) > int64(len(rest)) || wlen > 64<<10 {
			return nil, errBadIndex
		}
		if wlen > 0 {
			cp.window = rest[:wlen:wlen]
			rest = rest[wlen:]
		}
		prev := checkpoint{uoff: -1}
		if i > 0 {
			prev = ix.cps[i-1]
		}
		if cp.uoff <= prev.uoff || cp.uoff >= size || cp.bit > 7 || cp.coff < prev.coff ||
			cp.memberEnd < prev.memberEnd || cp.coff >= cp.memberEnd || cp.memberEnd > fileSize-8-garbage {
			return nil, errBadIndex
		}
	}
	if len(rest) != 0 || ix.cps[0].uoff != 0 {
		return nil, errBadIndex
	}
	ix.hashed = true
	return ix, nil
}

// cacheDir is the open directory of saved indexes, IndexDir/gzip-index.
type cacheDir struct {
	fd   int
	path string
}

// openCacheDir opens dir/gzip-index, creating dir and it (0700) if
// missing. Neither may be a symbolic link, owned by another user, or
// writable by group or others; the index directory is made 0700 if it is
// readable by others.
func openCacheDir(dir string) (*cacheDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("gzip index cache: %w", err)
	}
	top, err := openDir(unix.AT_FDCWD, dir, dir, false)
	if err != nil {
		return nil, err
	}
	defer unix.Close(top)
	path := dir + "/" + cacheSubdir
	if err := unix.Mkdirat(top, cacheSubdir, 0o700); err != nil && err != unix.EEXIST {
		return nil, fmt.Errorf("gzip index cache: creating %s: %w", path, err)
	}
	fd, err := openDir(top, cacheSubdir, path, true)
	if err != nil {
		return nil, err
	}
	return &cacheDir{fd: fd, path: path}, nil
}

// openDir opens the directory name beneath dirfd without following a
// symbolic link, and checks its owner and mode (see openCacheDir); private
// makes it 0700.
func openDir(dirfd int, name, path string, private bool) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ELOOP || err == unix.ENOTDIR {
		return -1, fmt.Errorf("gzip index cache: %s is a symbolic link or not a directory: not used (make it a directory of your own)", path)
	}
	if err != nil {
		return -1, fmt.Errorf("gzip index cache: opening %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("gzip index cache: %s: %w", path, err)
	}
	switch {
	case int(st.Uid) != os.Geteuid():
		err = fmt.Errorf("gzip index cache: %s belongs to user %d, not to us (%d): not used", path, st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		err = fmt.Errorf("gzip index cache: %s is writable by others (mode %#o): not used (chmod 700 it)", path, st.Mode&0o777)
	case private && st.Mode&0o077 != 0:
		err = unix.Fchmod(fd, 0o700)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (d *cacheDir) Close() { unix.Close(d.fd) }

// load reads the index saved under key, charging its memory, and checks
// it against the file r of fileSize bytes, all of whose deflate data it
// reads; it returns nil and charges nothing when there is none or it does
// not fit.
func (d *cacheDir) load(key indexKey, r io.ReaderAt, fileSize int64, b *charger) *index {
	name := key.name()
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), d.path+"/"+name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() ||
		st.Size <= 0 || st.Size > maxIndexFile {
		return nil
	}
	mark := b.charged
	if b.charge(st.Size) != nil {
		return nil
	}
	data := make([]byte, st.Size)
	if _, err := io.ReadFull(f, data); err != nil {
		b.undo(mark)
		return nil
	}
	ix, err := unmarshalIndex(data, key, fileSize, b.charge)
	if err != nil || !ix.verifyAll(r, fileSize) {
		b.undo(mark)
		return nil
	}
	now := unix.NsecToTimespec(time.Now().UnixNano())
	unix.UtimesNanoAt(d.fd, name, []unix.Timespec{now, now}, unix.AT_SYMLINK_NOFOLLOW) // recently used
	return ix
}

// save writes the index under key atomically (a temporary file, then
// rename), then prunes the cache.
func (d *cacheDir) save(key indexKey, ix *index, fileSize int64) error {
	name := key.name()
	var tmp string
	var fd int
	var err error
	for range 10 {
		tmp = fmt.Sprintf("%s.tmp%d", strings.TrimSuffix(name, ".idx"), time.Now().UnixNano()%1e9)
		fd, err = unix.Openat(d.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != unix.EEXIST {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("saving the gzip index in %s: %w", d.path, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(ix.marshal(key, fileSize))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(d.fd, tmp, d.fd, name)
	}
	if err != nil {
		unix.Unlinkat(d.fd, tmp, 0)
		return fmt.Errorf("saving the gzip index in %s: %w", d.path, err)
	}
	d.prune(time.Now(), MaxCacheBytes, MaxCacheAge)
	return nil
}

// prune removes indexes unused for maxAge, then the least recently used
// until the rest take at most maxBytes, and temporary files left by saves
// that died. It touches only regular files with the names save gives.
func (d *cacheDir) prune(now time.Time, maxBytes int64, maxAge time.Duration) {
	dup, err := unix.Dup(d.fd)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(dup), d.path)
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	type entry struct {
		name  string
		size  int64
		mtime time.Time
	}
	var keep []entry
	for _, name := range names {
		isTemp := strings.Contains(name, ".tmp")
		if !strings.HasSuffix(name, ".idx") && !isTemp {
			continue
		}
		var st unix.Stat_t
		if unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		e := entry{name: name, size: st.Blocks * 512, mtime: time.Unix(st.Mtim.Unix())}
		if age := now.Sub(e.mtime); (isTemp && age > staleTemp) || (!isTemp && age > maxAge) {
			unix.Unlinkat(d.fd, name, 0)
			continue
		}
		keep = append(keep, e)
	}
	slices.SortFunc(keep, func(a, b entry) int { return b.mtime.Compare(a.mtime) })
	var total int64
	for _, e := range keep {
		total += e.size
		if total > maxBytes {
			unix.Unlinkat(d.fd, e.name, 0)
		}
	}
}

// charger charges a sources.Budget and remembers how much, so that Close
// (or a failed Open) gives it back.
type charger struct {
	budget  *sources.Budget
	what    string
	charged int64
}

func (c *charger) charge(n int64) error {
	if err := c.budget.Charge(n, c.what); err != nil {
		return err
	}
	c.charged += n
	return nil
}

// undo releases what was charged since mark.
func (c *charger) undo(mark int64) {
	c.budget.Release(c.charged - mark)
	c.charged = mark
}
