package qcow2

import (
	"fmt"
	"io"

	"github.com/nbdloop/nbdloop/sources"
)

// Files opens the files that an image opened with OpenSource names: its
// backing files. The names come from an untrusted image, so an
// implementation confines them, as sources.NamedFiles confines paths: a
// name that leads outside the place of the image naming it is refused.
type Files interface {
	// Open opens, read-only, the file that name stands for in the image
	// at location base, and returns it and its location.
	Open(base, name string) (sources.Source, string, error)
}

// OpenSource opens, read-only, the qcow2 image read from src, which is at
// location (a URL: named in messages, and the place that its backing
// file's name is relative to), and its backing chain, opened through
// files. opts.ReadOnly and opts.Named do not apply. The image closes src
// when it is closed; the caller closes src when OpenSource fails.
func OpenSource(src sources.Source, location string, files Files, opts Options) (*Image, error) {
	if opts.Budget == nil {
		opts.Budget = sources.NewBudget(0)
	}
	opts.ReadOnly = true
	return openSource(src, location, files, opts, 0, map[fileID]bool{})
}

// openSource opens the image in src, at location, depth images down a
// backing chain whose files seen holds, after adding src to them.
func openSource(src sources.Source, location string, files Files, opts Options, depth int, seen map[fileID]bool) (*Image, error) {
	if err := markLocation(location, seen); err != nil {
		return nil, err
	}
	return newImage(sourceFile{src}, location, src.Size(), opts, depth, seen, files)
}

// markLocation records the file at location as part of the backing chain,
// and fails if it already is: the chain loops.
func markLocation(location string, seen map[fileID]bool) error {
	id := fileID{loc: location}
	if seen[id] {
		return fmt.Errorf("backing chain loops back to %s (fix the chain: qemu-img rebase)", location)
	}
	seen[id] = true
	return nil
}

// openFilesBacking opens the backing file of an image opened with
// OpenSource, through im.files, as openBacking does by path.
func (im *Image) openFilesBacking(opts Options, depth int, seen map[fileID]bool) error {
	src, loc, err := im.files.Open(im.path, im.h.backingFile)
	if err != nil {
		return fmt.Errorf("backing file of %s: %w", im.path, err)
	}
	f := sourceFile{src}
	format := im.h.backingFormat
	if format == "" {
		format = probeFormat(f)
	}
	switch format {
	case "raw":
		if err := markLocation(loc, seen); err != nil {
			src.Close()
			return err
		}
		im.backing = f
	case "qcow2":
		b, err := openSource(src, loc, im.files, opts, depth+1, seen)
		if err != nil {
			src.Close()
			return fmt.Errorf("backing file %s: %w", loc, err)
		}
		im.takeBacking(b, loc)
	default:
		src.Close()
		return fmt.Errorf("backing file %s has format %q: %w (raw and qcow2 are)", loc, format, ErrUnsupported)
	}
	return nil
}

// sourceFile is an image file read from a sources.Source: read-only, and
// reads that reach past its end return io.EOF, as a file's do.
type sourceFile struct{ src sources.Source }

func (s sourceFile) ReadAt(p []byte, off int64) (int, error) {
	size := s.src.Size()
	if off >= size {
		return 0, io.EOF
	}
	if rest := size - off; int64(len(p)) > rest {
		n, err := s.src.ReadAt(p[:rest], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return s.src.ReadAt(p, off)
}

func (s sourceFile) WriteAt([]byte, int64) (int, error) { return 0, sources.ErrReadOnly }
func (s sourceFile) Size() int64                        { return s.src.Size() }
func (s sourceFile) Close() error                       { return s.src.Close() }
