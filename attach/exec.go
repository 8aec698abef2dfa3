package attach

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/script"
)

// exec:PATH[,OPTION...] serves a device from a program (sources/script):
// the path ends at the first comma, the options are checked here but kept
// as written, so that the SOURCE shown by list is the one given.

func parseExecSpec(s string) (Spec, error) {
	path, opts, comma := strings.Cut(strings.TrimPrefix(s, "exec:"), ",")
	if path == "" {
		return Spec{}, fmt.Errorf("%s: no program given (e.g. exec:./disk.sh)", s)
	}
	if comma && opts == "" {
		return Spec{}, fmt.Errorf("%s: empty option after the comma", s)
	}
	if _, err := script.ParseOptions(opts); err != nil {
		return Spec{}, fmt.Errorf("%s: %w", s, err)
	}
	return Spec{Kind: KindExec, Path: path, Options: opts}, nil
}

func execSpecString(s Spec) string {
	if s.Options == "" {
		return "exec:" + s.Path
	}
	return "exec:" + s.Path + "," + s.Options
}

// openExec starts the program through its open sequence. A size that is
// not a multiple of the block size is rounded down, as for memory:, since
// the program decides it, not the user.
func openExec(spec Spec, opts OpenOptions) (*Opened, error) {
	so, err := script.ParseOptions(spec.Options)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec, err)
	}
	so.ReadOnly = opts.ReadOnly
	src, err := script.Open(spec.Path, so)
	if err != nil {
		var pe *fs.PathError
		switch {
		case errors.As(err, &pe) && errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%s: %v (check the path)", spec.Path, pe.Err)
		case errors.As(err, &pe) && errors.Is(err, fs.ErrPermission):
			if fi, err := os.Stat(spec.Path); err == nil && fi.IsDir() {
				return nil, fmt.Errorf("%s: is a directory (exec: runs a program: give its path, e.g. exec:%s)", spec.Path, filepath.Join(spec.Path, "disk.sh"))
			}
			return nil, fmt.Errorf("%s: not an executable file (make it one: chmod +x %s)", spec.Path, spec.Path)
		}
		return nil, fmt.Errorf("%s: %w", spec, err)
	}
	desc := spec.String()
	if abs, err := filepath.Abs(spec.Path); err == nil {
		desc = Spec{Kind: KindExec, Path: abs, Options: spec.Options}.String()
	}
	format := "exec"
	if so.Persistent {
		format = "exec-persistent"
	}
	bs := opts.BlockSize
	if m := src.BlockSizes().Min; m > bs {
		src.Close()
		hint := fmt.Sprintf("attach with -b %d", m)
		if m > 4096 {
			hint = "nbdloop's block size is at most 4096: change the program's block_size"
		}
		return nil, fmt.Errorf("%s: the program's minimum block size is %d bytes, more than the %d-byte block size (%s)", spec.Path, m, bs, hint)
	}
	size := src.Size()
	var s sources.Source = src
	var warns []string
	if r := size % bs; r != 0 {
		if size < bs {
			src.Close()
			return nil, fmt.Errorf("%s: get_size printed %d, smaller than one %d-byte block (serve more bytes)", spec.Path, size, bs)
		}
		w, err := sources.NewWindow(src, 0, size-r)
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		s = w
		warns = append(warns, fmt.Sprintf("%s: size %d rounded down to %d bytes, a multiple of the %d-byte block size", spec.Path, size, size-r, bs))
	}
	return &Opened{Source: s, Desc: desc, Format: format, Warnings: warns}, nil
}
