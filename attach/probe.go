package attach

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/nbdloop/nbdloop/sources"
	gzipsrc "github.com/nbdloop/nbdloop/sources/gzip"
	"github.com/nbdloop/nbdloop/sources/xz"
	"github.com/nbdloop/nbdloop/sources/zstd"
)

// Compressed images (xz, gzip, zstd) are read-only sources. attach without
// -r serves them read-only anyway, the way mount falls back to read-only on
// write-protected media and nbdkit's xz filter is read-only, and says so in
// one line: refusing would only make the user type -r. --filter cow on top
// makes the device writable (the writes go to the overlay). The image file
// is never opened for writing, so a compressed image on a read-only
// filesystem or without write permission attaches without -r too.

// roNote is the line attach prints when a read-only format is attached
// without -r.
const roNote = "%s: note: %s images are read-only: attached read-only (add --filter cow for a writable overlay)"

func isXZ(head []byte) bool {
	return bytes.HasPrefix(head, []byte{0xFD, '7', 'z', 'X', 'Z', 0x00})
}

func openXZ(f namedSource, opts OpenOptions) (sources.Source, error) {
	return xz.Open(f, f.Size(), xz.Options{CacheSize: opts.CacheSize, Sequential: opts.Sequential,
		Budget: opts.Budget, SpillLimit: opts.SpillLimit, Progress: opts.progressOf(JobDecode, f.Name())})
}

func isGzip(head []byte) bool {
	return bytes.HasPrefix(head, []byte{0x1F, 0x8B, 8})
}

// openGzip keeps the checkpoint index of gzip images in the user's cache
// directory ($XDG_CACHE_HOME/nbdloop, else ~/.cache/nbdloop), so that the
// second attach of the same image skips the inflating pass.
func openGzip(f namedSource, opts OpenOptions) (sources.Source, error) {
	dir, err := os.UserCacheDir()
	if err == nil {
		dir = filepath.Join(dir, "nbdloop")
	} else {
		dir = ""
	}
	return gzipsrc.Open(f, f.Size(), gzipsrc.Options{CacheSize: opts.CacheSize, IndexDir: dir,
		Budget: opts.Budget, SpillLimit: opts.SpillLimit, Progress: opts.progressOf(JobIndex, f.Name())})
}

// openReadOnlyFormat is called when path cannot be opened for writing: if
// the reason is permissions or a read-only filesystem and the file holds a
// read-only format, it returns the file opened read-only, else openErr.
func openReadOnlyFormat(path string, fopts sources.FileOptions, openErr error) (*sources.File, error) {
	if !errors.Is(openErr, fs.ErrPermission) && !errors.Is(openErr, syscall.EROFS) {
		return nil, openErr
	}
	fopts.ReadOnly = true
	f, err := sources.OpenFile(path, fopts)
	if err != nil {
		return nil, openErr
	}
	head := make([]byte, min(f.Size(), 4096))
	if n, err := f.ReadAt(head, 0); err != nil && !(errors.Is(err, io.EOF) && n == len(head)) {
		f.Close()
		return nil, openErr
	}
	for _, fm := range probeTable {
		if fm.readOnly && fm.match(head) {
			return f, nil
		}
	}
	f.Close()
	return nil, openErr
}

// reopenReadOnly returns f, or f reopened read-only if fm is a read-only
// format and f was opened for writing.
func reopenReadOnly(f *sources.File, fm format, path string, fopts sources.FileOptions) (*sources.File, error) {
	if !fm.readOnly || fopts.ReadOnly || f.Caps().ReadOnly {
		return f, nil
	}
	f.Close()
	fopts.ReadOnly = true
	return sources.OpenFile(path, fopts)
}

// probed finishes opening a source found by the probe table: the size
// must suit the block size; the source's own warnings (Warnings() []string)
// and the read-only note are passed on, one line each, naming the path.
func probed(path, desc string, fm format, src sources.Source, opts OpenOptions) (*Opened, error) {
	if bs := opts.BlockSize; bs > 0 && src.Size()%bs != 0 {
		src.Close()
		hint := "recompress an image padded to whole sectors: truncate -s %512 IMAGE"
		if src.Size()%512 == 0 {
			hint = "attach it with -b 512"
		}
		return nil, fmt.Errorf("%s: %s image: uncompressed size %d is not a multiple of %d bytes (%s)", path, fm.name, src.Size(), bs, hint)
	}
	op := &Opened{Source: src, Desc: desc, Format: fm.name}
	if fm.readOnly && !opts.ReadOnly {
		op.Warnings = append(op.Warnings, fmt.Sprintf(roNote, path, fm.name))
	}
	if w, ok := src.(interface{ Warnings() []string }); ok {
		for _, line := range w.Warnings() {
			op.Warnings = append(op.Warnings, fmt.Sprintf("%s: warning: %s", path, line))
		}
	}
	return op, nil
}

// isZstd matches a zstd frame, or a skippable frame (which zstd files,
// seekable ones among them, may start with).
func isZstd(head []byte) bool {
	if len(head) < 4 {
		return false
	}
	if bytes.HasPrefix(head, []byte{0x28, 0xB5, 0x2F, 0xFD}) {
		return true
	}
	return head[0]&0xF0 == 0x50 && head[1] == 0x2A && head[2] == 0x4D && head[3] == 0x18
}

func openZstd(f namedSource, opts OpenOptions) (sources.Source, error) {
	return zstd.Open(f, f.Size(), zstd.Options{CacheSize: opts.CacheSize, Sequential: opts.Sequential,
		Budget: opts.Budget, SpillLimit: opts.SpillLimit, Progress: opts.progressOf(JobDecode, f.Name())})
}
