package vmdk

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/nbdloop/nbdloop/sources"
)

// file is what a disk reads a descriptor or an extent from: a file by
// path (*os.File), or a Source (OpenSource).
type file interface {
	io.ReaderAt
	io.WriterAt
	Close() error
}

// Files opens the files that a disk opened with OpenSource names: its
// extents and parents. The names come from an untrusted image, so an
// implementation confines them, as sources.NamedFiles confines paths: a
// name that leads outside the place of the disk naming it is refused.
// (httpsrc.Named is one, for URLs.)
type Files interface {
	// Open opens, read-only, the file that name stands for in the disk
	// at location base, and returns it and its location.
	Open(base, name string) (sources.Source, string, error)
}

// opener opens what a disk names, by path or through Files.
type opener interface {
	// open opens the file name stands for in the disk at base (the
	// disk's directory for paths, its location for Files): the file, its
	// size and its location.
	open(base, name string, writable bool) (file, int64, string, error)
	// resolve names the file without opening it (for messages).
	resolve(base, name string) string
	// flat serves length bytes at off of the file f at loc as a flat
	// extent; fewer when the file is shorter (the caller checks).
	flat(f file, loc string, writable bool, off, length int64) (sources.Source, error)
	// place is where the names of the disk at loc are relative to.
	place(loc string) (string, error)
	// id names the file f at loc for finding loops in a chain of parents.
	id(f file, loc string) (string, error)
	// readOnly is the opener for parents: nothing opened for writing.
	readOnly() opener
}

// pathFiles opens files by path, confined by sources.NamedFiles.
type pathFiles struct{ named sources.NamedFiles }

func (p pathFiles) open(base, name string, writable bool) (file, int64, string, error) {
	f, path, err := p.named.Open(base, name, writable)
	if err != nil {
		return nil, 0, path, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, path, err
	}
	return f, fi.Size(), path, nil
}

func (p pathFiles) resolve(base, name string) string { return p.named.Resolve(base, name) }

func (p pathFiles) flat(f file, loc string, writable bool, off, length int64) (sources.Source, error) {
	return sources.NewFile(f.(*os.File), loc, sources.FileOptions{ReadOnly: !writable, Offset: off, SizeLimit: length})
}

func (p pathFiles) place(loc string) (string, error) {
	abs, err := filepath.Abs(loc)
	if err != nil {
		return "", err
	}
	return filepath.Dir(abs), nil
}

func (p pathFiles) id(f file, loc string) (string, error) {
	fi, err := f.(*os.File).Stat()
	if err != nil {
		return "", err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("inode %d:%d", st.Dev, st.Ino), nil
	}
	return loc, nil
}

func (p pathFiles) readOnly() opener {
	p.named.ReadOnly = true
	return p
}

// sourceFiles opens files through Files, read-only.
type sourceFiles struct{ files Files }

func (s sourceFiles) open(base, name string, writable bool) (file, int64, string, error) {
	src, loc, err := s.files.Open(base, name)
	if err != nil {
		return nil, 0, loc, err
	}
	return sourceFile{src}, src.Size(), loc, nil
}

func (s sourceFiles) resolve(base, name string) string { return name }

func (s sourceFiles) flat(f file, loc string, writable bool, off, length int64) (sources.Source, error) {
	src := f.(sourceFile).Source
	if off >= src.Size() {
		src.Close()
		return nil, fmt.Errorf("%s holds %d bytes, the extent starts at %d", loc, src.Size(), off)
	}
	return sources.NewWindow(src, off, min(length, src.Size()-off))
}

func (s sourceFiles) place(loc string) (string, error) { return loc, nil }

func (s sourceFiles) id(f file, loc string) (string, error) { return "location " + loc, nil }

func (s sourceFiles) readOnly() opener { return s }

// sourceFile reads a file from a Source.
type sourceFile struct{ sources.Source }

// OpenSource opens, read-only, the disk read from src, which is at
// location (a URL: named in messages, and the place that the names of its
// extents and parent are relative to), opening what it names through
// files. opts.ReadOnly and opts.Named do not apply. The disk closes src
// when it is closed, and when OpenSource fails.
func OpenSource(src sources.Source, location string, files Files, opts Options) (*Disk, error) {
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Budget == nil {
		opts.Budget = sources.NewBudget(0)
	}
	opts.ReadOnly = true
	return open(sourceFile{src}, src.Size(), location, sourceFiles{files}, opts, 0, map[string]bool{})
}
