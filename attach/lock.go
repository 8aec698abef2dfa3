package attach

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Image locks follow qemu's scheme (block/file-posix.c), so that nbdloop,
// qemu, qemu-nbd and qemu-img see each other: open file description locks
// (F_OFD_SETLK, tied to the open file, not the process) on single bytes of
// the image. A shared lock on byte lockBasePerm+P says "I use permission
// P", one on byte lockBaseShared+P "I do not let others use P". Before
// using a permission, a process checks that nobody refuses to share it,
// and before refusing one, that nobody uses it. nbdloop uses consistent
// reads always and writes when the device is writable, and shares reads
// but never writes: so two writers, or a writer and a reader, exclude each
// other, and readers share.
const (
	lockBasePerm   = 100
	lockBaseShared = 200
	permRead       = 0 // BLK_PERM_CONSISTENT_READ
	permWrite      = 1 // BLK_PERM_WRITE
)

// imageLock holds the locks on one file for as long as it is open.
type imageLock struct {
	path string
	f    *os.File
	dev  uint64
	ino  uint64
}

// lockFile opens path and takes the locks of a reader of it; upgrade adds
// the writer's. The error names the holder when it is a device of ours.
func lockFile(path string) (*imageLock, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: opening it to lock it: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	l := &imageLock{path: path, f: f, dev: uint64(st.Dev), ino: st.Ino}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		// Block devices are claimed by the kernel's own exclusivity
		// rules, not byte locks.
		return l, nil
	}
	if err := l.set(lockBasePerm+permRead, lockBaseShared+permWrite); err != nil {
		f.Close()
		return nil, err
	}
	if by := l.conflict(lockBasePerm + permWrite); by != "" {
		f.Close()
		return nil, fmt.Errorf("%s: is being written by %s: refused (detach it or stop that program first; --no-lock if you know it is safe)", path, by)
	}
	return l, nil
}

// upgrade adds the locks of a writer.
func (l *imageLock) upgrade() error {
	if l == nil || l.f == nil {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(int(l.f.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	if err := l.set(lockBasePerm + permWrite); err != nil {
		return err
	}
	if by := l.conflict(lockBaseShared + permWrite); by != "" {
		return fmt.Errorf("%s: is in use by %s, which does not let others write it: refused (detach it first, or attach read-only: -r; --no-lock if you know it is safe)", l.path, by)
	}
	return nil
}

// set takes shared locks on the given bytes.
func (l *imageLock) set(bytes ...int64) error {
	for _, b := range bytes {
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: b, Len: 1}
		if err := unix.FcntlFlock(l.f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			return fmt.Errorf("%s: locking: %w", l.path, err)
		}
	}
	return nil
}

// conflict says who else holds a lock on byte b ("" if nobody).
func (l *imageLock) conflict(b int64) string {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: b, Len: 1}
	if err := unix.FcntlFlock(l.f.Fd(), unix.F_OFD_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		return ""
	}
	return l.holder()
}

// holder names the device of ours that serves the file, else another
// program.
func (l *imageLock) holder() string {
	dir := StateDir()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		var idx int
		if _, err := fmt.Sscanf(e.Name(), "nbd%d.json", &idx); err != nil {
			continue
		}
		st := readState(dir, idx)
		if st == nil || st.PID == os.Getpid() {
			continue
		}
		for _, f := range st.Config.Files {
			if f.Dev == l.dev && f.Ino == l.ino {
				return st.Name()
			}
		}
	}
	return "another program (qemu, qemu-nbd, or an nbdloop --foreground?)"
}

// Close releases the locks.
func (l *imageLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}

// imageLocks are the locks of one device.
type imageLocks []*imageLock

// lockFiles takes a reader's locks on every file of files that is served
// (not a program).
func lockFiles(files []FileIdentity) (imageLocks, error) {
	var ls imageLocks
	for _, f := range files {
		if f.Program {
			continue
		}
		l, err := lockFile(f.Path)
		if err != nil {
			ls.Close()
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func (ls imageLocks) upgrade() error {
	for _, l := range ls {
		if err := l.upgrade(); err != nil {
			return err
		}
	}
	return nil
}

func (ls imageLocks) Close() {
	for _, l := range ls {
		l.Close()
	}
}
