package qcow2

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// openBacking opens the backing file named in the header, through
// im.files for an image opened with OpenSource, else relative to the
// image's directory unless absolute, through opts.Named (so confined, and
// read-only), with the format of the backing format extension (probed from
// its first bytes when absent). A chain deeper than MaxBackingDepth is
// refused.
func (im *Image) openBacking(opts Options, depth int, seen map[fileID]bool) error {
	if depth+1 >= MaxBackingDepth {
		return fmt.Errorf("backing chain is deeper than %d images (flatten it: qemu-img convert -O qcow2 IMAGE NEW.qcow2)", MaxBackingDepth)
	}
	if err := im.checkBackingName(); err != nil {
		return err
	}
	if im.files != nil {
		if err := im.openFilesBacking(opts, depth, seen); err != nil {
			return err
		}
		im.backingSize = im.backing.Size()
		return nil
	}
	base, err := filepath.Abs(filepath.Dir(im.path))
	if err != nil {
		return fmt.Errorf("backing file %q of %s: %w", im.h.backingFile, im.path, err)
	}
	format := im.h.backingFormat
	f, name, err := opts.Named.Open(base, im.h.backingFile, false)
	if err != nil {
		return fmt.Errorf("backing file of %s: %w", im.path, err)
	}
	if format == "" {
		format = probeFormat(f)
	}
	switch format {
	case "raw":
		r, err := openRawBacking(f, name, seen)
		if err != nil {
			return err
		}
		im.backing = r
	case "qcow2":
		if err := im.openQcow2Backing(f, name, opts, depth, seen); err != nil {
			return err
		}
	default:
		f.Close()
		return fmt.Errorf("backing file %s has format %q: %w (raw and qcow2 are)", name, format, ErrUnsupported)
	}
	im.backingSize = im.backing.Size()
	return nil
}

// checkBackingName refuses backing names that are not plain file names:
// json: and protocol names, and names with control characters.
func (im *Image) checkBackingName() error {
	if strings.HasPrefix(im.h.backingFile, "json:") || containsProtocol(im.h.backingFile) {
		return fmt.Errorf("backing file %q: %w (only plain file names are; rebase the image: qemu-img rebase -b FILE -F FORMAT IMAGE)", im.h.backingFile, ErrUnsupported)
	}
	if strings.ContainsFunc(im.h.backingFile, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("backing file %q of %s: a control character in a file name (rebase the image: qemu-img rebase -b FILE -F FORMAT IMAGE)", im.h.backingFile, im.path)
	}
	return nil
}

// probeFormat tells a qcow2 backing file from a raw one by its magic.
func probeFormat(f io.ReaderAt) string {
	var m [4]byte
	if n, _ := f.ReadAt(m[:], 0); n == 4 && binary.BigEndian.Uint32(m[:]) == magic {
		return "qcow2"
	}
	return "raw"
}

// openRawBacking serves f, at name, as a raw backing file, unless it is
// already in the chain (seen). It closes f on error.
func openRawBacking(f *os.File, name string, seen map[fileID]bool) (*rawFile, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && seen[fileID{dev: uint64(st.Dev), ino: st.Ino}] {
		f.Close()
		return nil, fmt.Errorf("backing chain loops back to %s (fix the chain: qemu-img rebase)", name)
	}
	size := fi.Size()
	if fi.Mode()&os.ModeDevice != 0 {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, err
		}
	}
	return &rawFile{f: f, size: size}, nil
}

// openQcow2Backing opens f, at name, as the image's qcow2 backing file,
// read-only, and takes its warnings. It closes f on error.
func (im *Image) openQcow2Backing(f *os.File, name string, opts Options, depth int, seen map[fileID]bool) error {
	bopts := opts
	bopts.ReadOnly = true
	b, err := openFile(f, name, bopts, depth+1, seen)
	if err != nil {
		f.Close()
		return fmt.Errorf("backing file %s: %w", name, err)
	}
	im.takeBacking(b, name)
	return nil
}

// takeBacking makes b, at name, the image's backing file, and takes its
// warnings.
func (im *Image) takeBacking(b *Image, name string) {
	for _, w := range b.warnings {
		im.warnings = append(im.warnings, "backing file "+name+": "+w)
	}
	im.backing = b
}

// containsProtocol tells names such as nbd://host/x or http://... from
// file names.
func containsProtocol(name string) bool {
	for i := 0; i+2 < len(name); i++ {
		switch c := name[i]; {
		case c == '/':
			return false
		case c == ':':
			return name[i+1] == '/' && name[i+2] == '/'
		}
	}
	return false
}

// rawFile is a raw backing file.
type rawFile struct {
	f    *os.File
	size int64
}

func (r *rawFile) ReadAt(p []byte, off int64) (int, error) { return len(p), preadFull(r.f, p, off) }
func (r *rawFile) Size() int64                             { return r.size }
func (r *rawFile) Close() error                            { return r.f.Close() }
