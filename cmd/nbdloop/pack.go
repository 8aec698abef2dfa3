package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/pack"
)

func packCommand() *cli.Command {
	return &cli.Command{
		Name:      "pack",
		Usage:     "compress an image for fast random access (multi-block xz, seekable zstd)",
		UsageText: "nbdloop pack [options] IMAGE -o OUT.xz|OUT.zst",
		Description: "Compresses IMAGE into OUT in independent blocks, in parallel on all cores, so\n" +
			"that `nbdloop attach OUT` reads any part of it quickly: a multi-block xz file\n" +
			"whose block headers carry their sizes, or a seekable zstd file (frames plus a\n" +
			"seek table). Both decompress with the standard xz and zstd tools. The format\n" +
			"follows OUT's name (.xz, .zst), or --format. IMAGE is any SOURCE attach takes,\n" +
			"compressed ones included, so a single-block xz file repacks in one step.\n" +
			"Progress goes to stderr: a bar on a terminal, a line every 10% otherwise.\n" +
			"Needs no root. xz compression (ulikunitz/xz) runs at a few MiB/s per core;\n" +
			"zstd at tens of MiB/s per core.",
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("pack: %v (see nbdloop pack --help)", err)
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the compressed image to `OUT` (.xz or .zst)"},
			&cli.StringFlag{Name: "format", Usage: "`xz` or zstd (default: from OUT's name)"},
			&cli.StringFlag{Name: "block-size", Usage: "uncompressed `SIZE` of each block or frame", DefaultText: fmt.Sprintf("%dM for xz, %dM for zstd", pack.DefaultXZBlockSize>>20, pack.DefaultZstdBlockSize>>20)},
			&cli.IntFlag{Name: "level", Value: -1, Usage: "compression level `N`: xz 0..9, zstd 1..22", DefaultText: fmt.Sprintf("%d for xz, %d for zstd", pack.DefaultXZLevel, pack.DefaultZstdLevel)},
			&cli.IntFlag{Name: "threads", Aliases: []string{"T"}, Usage: "compress with `N` threads", DefaultText: "CPUs"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite OUT if it exists"},
		},
		Action: doPack,
	}
}

// packFormat picks the format from --format or OUT's name.
func packFormat(flag, out string) (string, error) {
	switch strings.ToLower(flag) {
	case "xz":
		return pack.XZ, nil
	case "zstd", "zst":
		return pack.Zstd, nil
	case "":
	default:
		return "", usageError("pack: --format %q: use xz or zstd", flag)
	}
	switch {
	case strings.HasSuffix(out, ".xz"):
		return pack.XZ, nil
	case strings.HasSuffix(out, ".zst"), strings.HasSuffix(out, ".zstd"):
		return pack.Zstd, nil
	}
	return "", usageError("pack: %s: cannot tell the format from the name (end it in .xz or .zst, or give --format)", out)
}

// packImage returns IMAGE, the one operand (options anywhere are read by
// permuteArgs).
func packImage(c *cli.Context) (string, error) {
	args := c.Args().Slice()
	switch {
	case len(args) == 0:
		return "", usageError("pack: no IMAGE given (e.g. nbdloop pack disk.img -o disk.img.xz)")
	case len(args) > 1:
		return "", usageError("pack: one IMAGE expected, got %s (see nbdloop pack --help)", strings.Join(args, " "))
	}
	return args[0], nil
}

// checkPackLevel refuses a --level the format does not have.
func checkPackLevel(format string, level int, given bool) error {
	lo, hi, def := 0, 9, pack.DefaultXZLevel
	if format == pack.Zstd {
		lo, hi, def = 1, 22, pack.DefaultZstdLevel
	}
	if given && (level < lo || level > hi) {
		return usageError("pack: --level %d: %s levels are %d to %d (e.g. --level %d)", level, format, lo, hi, def)
	}
	return nil
}

func doPack(c *cli.Context) error {
	image, err := packImage(c)
	if err != nil {
		return err
	}
	out := c.String("output")
	if out == "" {
		return usageError("pack: no output given (add -o OUT.xz or -o OUT.zst)")
	}
	format, err := packFormat(c.String("format"), out)
	if err != nil {
		return err
	}
	opts := pack.Options{Format: format, Level: c.Int("level"), Workers: c.Int("threads")}
	if err := checkPackLevel(format, opts.Level, c.IsSet("level")); err != nil {
		return err
	}
	if s := c.String("block-size"); s != "" {
		if opts.BlockSize, err = bytesize.Parse(s); err != nil || opts.BlockSize < 4096 {
			return usageError("pack: --block-size %q: give a size of at least 4K (e.g. 4M)", s)
		}
	}
	if opts.Workers < 0 {
		return usageError("pack: --threads %d: must be 1 or more", opts.Workers)
	}
	spec, err := attach.ParseSpec(image)
	if err != nil {
		return usageError("pack: %v", err)
	}
	src, err := attach.OpenSource(spec, attach.OpenOptions{ReadOnly: true, BlockSize: 1, Sequential: true})
	if err != nil {
		return err
	}
	defer src.Source.Close()
	for _, w := range src.Warnings {
		if !strings.Contains(w, "note: ") && !strings.Contains(w, "nbdloop pack") {
			fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s\n", w)
		}
	}
	if spec.Kind == attach.KindFile && sameFile(spec.Path, out) {
		return fmt.Errorf("%s: is the image being packed (%s): refused (write to another file)", out, image)
	}
	if _, err := os.Lstat(out); err == nil && !c.Bool("force") {
		return fmt.Errorf("%s: already exists (remove it, or add --force)", out)
	}
	w, err := newSafeOutput(out, c.Bool("force"))
	if err != nil {
		return err
	}
	defer w.abort()
	size := src.Source.Size()
	prog := newProgress(c.App.ErrWriter, size)
	opts.Progress = prog.update
	bw := bufio.NewWriterSize(w.f, 1<<20)
	start := time.Now()
	res, err := pack.Pack(bw, src.Source, size, opts)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = w.commit()
	}
	prog.done()
	if err != nil {
		return fmt.Errorf("pack: %s: %w", out, err)
	}
	el := time.Since(start)
	fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s -> %s: %s -> %s (%.1f%%), %d %s blocks, %s, %s/s\n",
		image, out, bytesize.Format(res.In), bytesize.Format(res.Out), 100*float64(res.Out)/float64(max(1, res.In)),
		res.Blocks, format, el.Round(100*time.Millisecond), bytesize.Format(int64(float64(res.In)/max(el.Seconds(), 1e-3))))
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// progress shows how far pack is: a bar redrawn in place on a terminal,
// else a line at every 10%.
type progress struct {
	w     io.Writer
	size  int64
	tty   bool
	start time.Time
	last  time.Time
	step  int64 // the last 10% step printed (non-tty)
	drawn bool
}

func newProgress(w io.Writer, size int64) *progress {
	p := &progress{w: w, size: size, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progress) update(in, out int64) {
	now := time.Now()
	pct := 100 * float64(in) / float64(max(1, p.size))
	if p.tty {
		if now.Sub(p.last) < 200*time.Millisecond && in < p.size {
			return
		}
		p.last = now
		const width = 30
		n := int(pct / 100 * width)
		rate := float64(in) / max(now.Sub(p.start).Seconds(), 1e-3)
		left := ""
		if rate > 0 && in < p.size {
			left = fmt.Sprintf(", %v left", time.Duration(float64(p.size-in)/rate*float64(time.Second)).Round(time.Second))
		}
		fmt.Fprintf(p.w, "\r\033[K[%s%s] %3.0f%% %s of %s, %s/s, %.1f%% of the size%s",
			strings.Repeat("=", n), strings.Repeat(" ", width-n), pct,
			bytesize.Format(in), bytesize.Format(p.size), bytesize.Format(int64(rate)),
			100*float64(out)/float64(max(1, in)), left)
		p.drawn = true
		return
	}
	if step := int64(pct) / 10; step > p.step {
		p.step = step
		fmt.Fprintf(p.w, "nbdloop: pack: %d%% (%s of %s)\n", step*10, bytesize.Format(in), bytesize.Format(p.size))
	}
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
