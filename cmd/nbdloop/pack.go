package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/pack"
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

// packFlags reads pack's flags from before IMAGE (parsed by cli) and from
// after it (`nbdloop pack IMAGE -o OUT.xz`, which cli leaves as arguments),
// and the arguments: IMAGE and an optional OUT.
type packFlags struct {
	c    *cli.Context
	late *flag.FlagSet
	set  map[string]string // flag name -> the name it was given as, after IMAGE
}

func parsePackFlags(c *cli.Context) (packFlags, []string, error) {
	pf := packFlags{c: c, set: map[string]string{}}
	args := c.Args().Slice()
	if len(args) == 0 {
		return pf, nil, usageError("pack: no IMAGE given (e.g. nbdloop pack disk.img -o disk.img.xz)")
	}
	pos := args[:1]
	if len(args) > 1 {
		pf.late = flag.NewFlagSet("pack", flag.ContinueOnError)
		pf.late.SetOutput(io.Discard)
		for _, f := range c.Command.Flags {
			f.Apply(pf.late)
		}
		// Flags may come before and after OUT: parse again after each
		// argument.
		rest := args[1:]
		for {
			if err := pf.late.Parse(rest); err != nil {
				return pf, nil, usageError("pack: %v (see nbdloop pack --help)", err)
			}
			if pf.late.NArg() == 0 {
				break
			}
			pos = append(pos, pf.late.Arg(0))
			rest = pf.late.Args()[1:]
		}
		if len(pos) > 2 {
			return pf, nil, usageError("pack: one IMAGE expected, got %s and %s", pos[0], strings.Join(pos[1:], " "))
		}
		given := map[string]bool{}
		pf.late.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for _, f := range c.Command.Flags {
			for _, n := range f.Names() {
				if given[n] {
					pf.set[f.Names()[0]] = n
				}
			}
		}
	}
	return pf, pos, nil
}

func (pf packFlags) String(name string) string {
	if n, ok := pf.set[name]; ok {
		return pf.late.Lookup(n).Value.String()
	}
	return pf.c.String(name)
}

func (pf packFlags) Int(name string) int {
	if n, ok := pf.set[name]; ok {
		v, _ := strconv.Atoi(pf.late.Lookup(n).Value.String())
		return v
	}
	return pf.c.Int(name)
}

func (pf packFlags) Bool(name string) bool {
	if n, ok := pf.set[name]; ok {
		return pf.late.Lookup(n).Value.String() == "true"
	}
	return pf.c.Bool(name)
}

func doPack(ctx *cli.Context) error {
	c, pos, err := parsePackFlags(ctx)
	if err != nil {
		return err
	}
	image, out := pos[0], c.String("output")
	if len(pos) == 2 {
		if out != "" {
			return usageError("pack: one IMAGE expected, got %s and %s (OUT is given with -o %s)", pos[0], pos[1], out)
		}
		out = pos[1]
	}
	if out == "" {
		return usageError("pack: no output given (add OUT or -o OUT: a name ending in .xz or .zst, or - for standard output)")
	}
	format, err := packFormat(c.String("format"), out)
	if err != nil {
		return err
	}
	opts := pack.Options{Format: format, Level: c.Int("level"), Workers: c.Int("threads")}
	if s := c.String("block-size"); s != "" {
		if opts.BlockSize, err = bytesize.Parse(s); err != nil || opts.BlockSize < 4096 {
			return usageError("pack: --block-size %q: give a size of at least 4K (e.g. 4M)", s)
		}
	}
	if opts.Workers < 0 {
		return usageError("pack: --threads %d: must be 1 or more", opts.Workers)
	}
	if out == "-" && isTerminal(ctx.App.Writer) {
		return usageError("pack: standard output is a terminal: refused (redirect it to a file or a pipe, or give OUT)")
	}
	in, err := packInput(image, ctx.App.Reader)
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
			fmt.Fprintf(ctx.App.ErrWriter, "nbdloop: %s\n", w)
		}
	}
	dst, err := packOutput(ctx, out, image, spec, c.Bool("force"))
	if err != nil {
		return err
	}
	defer dst.abort()
	size := src.Source.Size()
	quiet := c.Bool("quiet")
	prog := newProgress(ctx.App.ErrWriter, "pack", size, isTerminal(ctx.App.ErrWriter), time.Now)
	if !quiet {
		opts.Progress = func(in, out int64) {
			prog.update(in, fmt.Sprintf("%.1f%% of the size", 100*float64(out)/float64(max(1, in))))
		}
	}
	bw := bufio.NewWriterSize(dst.w, 1<<20)
	start := time.Now()
	res, err := pack.Pack(bw, src.Source, size, opts)
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
	fmt.Fprintf(ctx.App.ErrWriter, "nbdloop: %s -> %s: %s -> %s (%.1f%%), %d %s blocks, %s, %s/s\n",
		in.name, dst.name, bytesize.Format(res.In), bytesize.Format(res.Out), 100*float64(res.Out)/float64(max(1, res.In)),
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
