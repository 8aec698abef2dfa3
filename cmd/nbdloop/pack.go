package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/pack"
	"github.com/nbdloop/nbdloop/sources"
)

func packCommand() *cli.Command {
	return &cli.Command{
		Name:      "pack",
		Usage:     "compress an image for fast random access (multi-block xz, seekable zstd)",
		UsageText: "nbdloop pack [options] IMAGE|- [-o] OUT.xz|OUT.zst|-",
		Description: "Compresses IMAGE into OUT in independent blocks, in parallel on all cores, so\n" +
			"that `nbdloop attach OUT` reads any part of it quickly: a multi-block xz file\n" +
			"whose block headers carry their sizes, or a seekable zstd file (frames plus a\n" +
			"seek table). Both decompress with the standard xz and zstd tools. The format\n" +
			"follows OUT's name (.xz, .zst), or --format. IMAGE is any SOURCE attach takes,\n" +
			"compressed ones included, so a single-block xz file repacks in one step.\n" +
			"Progress goes to stderr: a bar on a terminal, a line every 10% otherwise.\n" +
			"Needs no root. xz compression (ulikunitz/xz) runs at a few MiB/s per core;\n" +
			"zstd at tens of MiB/s per core.\n\n" +
			"IMAGE - reads standard input (a pipe is first copied to a temporary file in\n" +
			"$TMPDIR: pack reads its input at offsets); OUT - writes standard output (not a\n" +
			"terminal; give --format). OUT may follow IMAGE or be given with -o.\n\n" +
			"--level is zstd's 1..22 for zstd. For xz it is nbdloop's own scale, not\n" +
			"xz(1)'s: it picks only the dictionary size of xz's preset of that number\n" +
			"(0: 256K, 1: 1M, 2: 2M, 3-4: 4M, 5-6: 8M, 7: 16M, 8: 32M, 9: 64M), capped at\n" +
			"the block size; the encoder (one hash-table match finder) is the same at\n" +
			"every level. So with the default 4M blocks levels 3..9 give the same output,\n" +
			"and the output is larger than xz -6's (about a fifth on source code): for the\n" +
			"smallest file, compress with xz(1) (xz -T0 --block-size=4MiB also writes\n" +
			"blocks that nbdloop reads at random).",
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("pack: %v (see nbdloop pack --help)", err)
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the compressed image to `OUT` (.xz or .zst)"},
			&cli.StringFlag{Name: "format", Usage: "`xz` or zstd (default: from OUT's name)"},
			&cli.StringFlag{Name: "block-size", Usage: "uncompressed `SIZE` of each block or frame", DefaultText: fmt.Sprintf("%dM for xz, %dM for zstd", pack.DefaultXZBlockSize>>20, pack.DefaultZstdBlockSize>>20)},
			&cli.IntFlag{Name: "level", Value: -1, Usage: "compression level `N`: xz 0..9 (nbdloop's scale: the dictionary size only, see above), zstd 1..22", DefaultText: fmt.Sprintf("%d for xz, %d for zstd", pack.DefaultXZLevel, pack.DefaultZstdLevel)},
			&cli.IntFlag{Name: "threads", Aliases: []string{"T"}, Usage: "compress with `N` threads", DefaultText: "CPUs"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite OUT if it exists"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print no progress and no summary (warnings and errors still)"},
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
	case out == "-":
		return "", usageError("pack: standard output has no name to tell the format from: give --format xz or --format zstd")
	}
	return "", usageError("pack: %s: cannot tell the format from the name (end it in .xz or .zst, or give --format)", out)
}

// packOperands returns IMAGE and the optional OUT (options anywhere are
// read by permuteArgs).
func packOperands(c *cli.Context) ([]string, error) {
	args := c.Args().Slice()
	switch {
	case len(args) == 0:
		return nil, usageError("pack: no IMAGE given (e.g. nbdloop pack disk.img -o disk.img.xz)")
	case len(args) > 2:
		return nil, usageError("pack: one IMAGE expected, got %s and %s", args[0], strings.Join(args[1:], " "))
	}
	return args, nil
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
	image, out, err := packPaths(c)
	if err != nil {
		return err
	}
	opts, err := packOptions(c, out)
	if err != nil {
		return err
	}
	if out == "-" && isTerminal(c.App.Writer) {
		return usageError("pack: standard output is a terminal: refused (redirect it to a file or a pipe, or give OUT)")
	}
	in, err := packInput(image, c.App.Reader)
	if err != nil {
		return err
	}
	defer in.close()
	spec, err := attach.ParseSpec(in.spec)
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
	dst, err := packOutput(c, out, image, spec, c.Bool("force"))
	if err != nil {
		return err
	}
	defer dst.abort()
	return packTo(c, dst, src.Source, in.name, opts)
}

// packPaths returns IMAGE and OUT, given after IMAGE or with -o.
func packPaths(c *cli.Context) (image, out string, err error) {
	pos, err := packOperands(c)
	if err != nil {
		return "", "", err
	}
	image, out = pos[0], c.String("output")
	if len(pos) == 2 {
		if out != "" {
			return "", "", usageError("pack: one IMAGE expected, got %s and %s (OUT is given with -o %s)", pos[0], pos[1], out)
		}
		out = pos[1]
	}
	if out == "" {
		return "", "", usageError("pack: no output given (add OUT or -o OUT: a name ending in .xz or .zst, or - for standard output)")
	}
	return image, out, nil
}

// packOptions reads the format (from --format or OUT's name), level,
// threads and block size.
func packOptions(c *cli.Context, out string) (pack.Options, error) {
	format, err := packFormat(c.String("format"), out)
	if err != nil {
		return pack.Options{}, err
	}
	opts := pack.Options{Format: format, Level: c.Int("level"), Workers: c.Int("threads")}
	if err := checkPackLevel(format, opts.Level, c.IsSet("level")); err != nil {
		return opts, err
	}
	if s := c.String("block-size"); s != "" {
		if opts.BlockSize, err = bytesize.Parse(s); err != nil || opts.BlockSize < 4096 {
			return opts, usageError("pack: --block-size %q: give a size of at least 4K (e.g. 4M)", s)
		}
	}
	if opts.Workers < 0 {
		return opts, usageError("pack: --threads %d: must be 1 or more", opts.Workers)
	}
	return opts, nil
}

// packTo packs src (named name) into dst with progress and a summary
// unless --quiet.
func packTo(c *cli.Context, dst packOut, src sources.Source, name string, opts pack.Options) error {
	size := src.Size()
	quiet := c.Bool("quiet")
	prog := newProgress(c.App.ErrWriter, "pack", size, isTerminal(c.App.ErrWriter), time.Now)
	if !quiet {
		opts.Progress = func(in, out int64) {
			prog.update(in, fmt.Sprintf("%.1f%% of the size", 100*float64(out)/float64(max(1, in))))
		}
	}
	bw := bufio.NewWriterSize(dst.w, 1<<20)
	start := time.Now()
	res, err := pack.Pack(bw, src, size, opts)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = dst.commit()
	}
	prog.done()
	if err != nil {
		return fmt.Errorf("pack: %s: %w", dst.name, err)
	}
	if quiet {
		return nil
	}
	el := time.Since(start)
	fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s -> %s: %s -> %s (%.1f%%), %d %s blocks, %s, %s/s\n",
		name, dst.name, bytesize.Format(res.In), bytesize.Format(res.Out), 100*float64(res.Out)/float64(max(1, res.In)),
		res.Blocks, opts.Format, el.Round(100*time.Millisecond), bytesize.Format(int64(float64(res.In)/max(el.Seconds(), 1e-3))))
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
