package sources

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// NamedFiles opens the files that an image names inside its own bytes
// (qcow2 backing files, VMDK extents and parents). Those names come from an
// untrusted file, so they are confined: a name resolves, symlinks included,
// to a place beneath the directory of the image the user named (Dir) or
// beneath one of the directories the user allowed (Allow); anything else is
// refused with a *ConfinedError. Only regular files are opened, and block
// devices when Devices is set; FIFOs, sockets and character devices never
// (they are not even opened: the type is checked on an O_PATH descriptor).
// When ReadOnly is set nothing is opened for writing.
//
// The zero value confines to nothing and opens nothing; formats that are
// given no NamedFiles should use Confine(imagePath).
type NamedFiles struct {
	// Dir is the directory of the image the user named, absolute.
	Dir string
	// Allow are further directories, absolute, beneath which named files
	// may be (--allow-path).
	Allow []string
	// Devices allows block devices as named files.
	Devices bool
	// ReadOnly refuses every open for writing (the image is attached
	// read-only, so nothing it names is written).
	ReadOnly bool
}

// Confine returns the NamedFiles for the image at path with nothing more
// allowed: named files must lie beneath the image's directory.
func Confine(path string) NamedFiles {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return NamedFiles{Dir: filepath.Dir(abs)}
}

// ConfinedError is the error of NamedFiles.Open for a name that resolves
// outside the allowed directories or to a file of a refused type.
type ConfinedError struct {
	Name   string // as the image gives it
	Path   string // where it leads, as far as known
	Reason string
	Flag   string // the command-line flag that would allow it, if any
}

func (e *ConfinedError) Error() string {
	s := fmt.Sprintf("%q: %s", e.Name, e.Reason)
	if e.Path != "" && e.Path != e.Name {
		s = fmt.Sprintf("%q (%s): %s", e.Name, e.Path, e.Reason)
	}
	if e.Flag != "" {
		s += " (" + e.Flag + ")"
	}
	return s
}

// Unwrap makes errors.Is(err, fs.ErrPermission) hold.
func (e *ConfinedError) Unwrap() error { return fs.ErrPermission }

// Resolve returns the absolute, cleaned path that name, found in an image
// whose directory is base, stands for: relative names are relative to base.
// It does not touch the file system.
func (n NamedFiles) Resolve(base, name string) string {
	if filepath.IsAbs(name) {
		return filepath.Clean(name)
	}
	return filepath.Join(base, name)
}

// Open opens the file that name, found in an image whose directory is base,
// stands for, for reading or (write) reading and writing. It returns the
// open file and the absolute path it was opened by.
func (n NamedFiles) Open(base, name string, write bool) (*os.File, string, error) {
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return nil, "", &ConfinedError{Name: name, Reason: "not a file name"}
	}
	if write && n.ReadOnly {
		return nil, "", &ConfinedError{Name: name, Reason: "would be opened for writing, but the image is attached read-only"}
	}
	path := n.Resolve(base, name)
	root, rel, ok := n.beneath(path)
	if !ok {
		return nil, path, &ConfinedError{Name: name, Path: path, Reason: "outside " + n.Dir,
			Flag: "allow its directory with --allow-path " + filepath.Dir(path)}
	}
	pfd, err := openBeneath(root, rel)
	if err != nil {
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ELOOP) {
			return nil, path, &ConfinedError{Name: name, Path: path, Reason: "a symbolic link leads outside " + root,
				Flag: "name the real file's directory with --allow-path"}
		}
		return nil, path, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, path, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFBLK:
		if !n.Devices {
			return nil, path, &ConfinedError{Name: name, Path: path, Reason: "is a block device", Flag: "allow block devices with --allow-devices"}
		}
	default:
		return nil, path, &ConfinedError{Name: name, Path: path, Reason: "is not a regular file (" + fileType(st.Mode) + ")"}
	}
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	// Reopen the very inode checked above through the O_PATH descriptor.
	f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(pfd), flag|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, path, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return f, path, nil
}

// beneath finds the allowed directory that path lies beneath, and path
// relative to it.
func (n NamedFiles) beneath(path string) (root, rel string, ok bool) {
	for _, d := range append([]string{n.Dir}, n.Allow...) {
		if d == "" || !filepath.IsAbs(d) {
			continue
		}
		d = filepath.Clean(d)
		if r, err := filepath.Rel(d, path); err == nil && r != ".." && !strings.HasPrefix(r, "../") && r != "." {
			return d, r, true
		}
	}
	return "", "", false
}

// openBeneath opens rel beneath root as an O_PATH descriptor, refusing any
// resolution (by "..", an absolute symlink or a magic link) that would leave
// root. Kernels without openat2 (before 5.6) get the same check done by
// resolving symlinks first.
func openBeneath(root, rel string) (int, error) {
	dfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if !errors.Is(err, unix.ENOSYS) {
		return fd, err
	}
	real, err := filepath.EvalSymlinks(filepath.Join(root, rel))
	if err != nil {
		return -1, err
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return -1, err
	}
	if r, err := filepath.Rel(realRoot, real); err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return -1, unix.EXDEV
	}
	return unix.Open(real, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return "unknown type"
}
