package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/attach"
)

// packIn is pack's input: the SOURCE to open, and how messages name it.
type packIn struct {
	spec, name string
	tmp        *os.File // standard input's copy, closed (and so gone) by close
}

// packInput returns pack's input for IMAGE. "-" is standard input: a
// regular file is read in place; anything else (a pipe) is first copied
// into an unlinked temporary file in $TMPDIR, because pack reads its input
// at offsets, in parallel, and must know its size. Either is then opened
// through /proc/self/fd, so that a compressed image probes as one.
func packInput(image string, stdin io.Reader) (packIn, error) {
	if image != "-" {
		return packIn{spec: image, name: image}, nil
	}
	in := packIn{name: "standard input"}
	if f, ok := stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			in.spec = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
			return in, nil
		}
	}
	dir := os.Getenv("TMPDIR")
	if dir == "" {
		dir = "/var/tmp" // as the decoders' temporary files: /tmp is often a small tmpfs
	}
	fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	var tmp *os.File
	if err == nil {
		tmp = os.NewFile(uintptr(fd), dir+"/(nbdloop pack stdin)")
	} else if tmp, err = os.CreateTemp(dir, "nbdloop-pack-*"); err == nil {
		os.Remove(tmp.Name())
	}
	if err != nil {
		return in, fmt.Errorf("pack: copying standard input to a temporary file in %s: %w (set TMPDIR to a directory with room for the image)", dir, unwrapPath(err))
	}
	if _, err := io.Copy(tmp, stdin); err != nil {
		tmp.Close()
		return in, fmt.Errorf("pack: copying standard input to a temporary file in %s: %w (set TMPDIR to a directory with room for the image)", dir, unwrapPath(err))
	}
	in.tmp, in.spec = tmp, fmt.Sprintf("/proc/self/fd/%d", tmp.Fd())
	return in, nil
}

func (in packIn) close() {
	if in.tmp != nil {
		in.tmp.Close()
	}
}

// packOut is where pack writes: a file written in full before it appears
// (safeOutput), or standard output.
type packOut struct {
	name   string
	w      io.Writer
	commit func() error
	abort  func()
}

// packOutput opens OUT ("-": standard output) for the image being packed,
// refusing an OUT that is that image, or exists without force.
func packOutput(ctx *cli.Context, out, image string, spec attach.Spec, force bool) (packOut, error) {
	if out == "-" {
		return packOut{name: "standard output", w: ctx.App.Writer, commit: func() error { return nil }, abort: func() {}}, nil
	}
	if spec.Kind == attach.KindFile && sameFile(spec.Path, out) {
		return packOut{}, fmt.Errorf("%s: is the image being packed (%s): refused (write to another file)", out, image)
	}
	if _, err := os.Lstat(out); err == nil && !force {
		return packOut{}, fmt.Errorf("%s: already exists (remove it, or add --force)", out)
	}
	w, err := newSafeOutput(out, force)
	if err != nil {
		return packOut{}, err
	}
	return packOut{name: out, w: w.f, commit: w.commit, abort: w.abort}, nil
}
