package filters

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// logFile is the file of a Log filter: opened for appending without
// following a symbolic link, and, when missing, created (0600, O_EXCL)
// only when the first bytes are written, so that an attach that fails
// before serving leaves no file behind and an existing one untouched.
type logFile struct {
	path string
	f    *os.File // nil until created
}

// openLogFile opens path for appending, or checks that it can be created
// in its directory later.
func openLogFile(path string) (*logFile, error) {
	l := &logFile{path: path}
	f, err := openAppend(path)
	switch {
	case err == nil:
		l.f = f
		return l, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return nil, fmt.Errorf("%s: cannot create it in %s: %w", path, dir, err)
	}
	return l, nil
}

// openAppend opens an existing regular file at path for appending, never
// through a symbolic link.
func openAppend(path string) (*os.File, error) {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0 {
		return nil, fmt.Errorf("%s: not a regular file (%s): refused (give a file path)", path, fi.Mode().Type())
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s: is a symbolic link: refused (name the file itself)", path)
		}
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s: not a regular file (%s): refused (give a file path)", path, fi.Mode().Type())
		}
		return nil, err
	}
	return f, nil
}

// Write appends p, creating the file first if need be.
func (l *logFile) Write(p []byte) (int, error) {
	if l.f == nil {
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if errors.Is(err, fs.ErrExist) {
			f, err = openAppend(l.path)
		}
		if err != nil {
			return 0, err
		}
		l.f = f
	}
	return l.f.Write(p)
}

// Close closes the file, if it was ever opened.
func (l *logFile) Close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
