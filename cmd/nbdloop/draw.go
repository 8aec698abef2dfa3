package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/pictures"
)

func drawCommand() *cli.Command {
	return &cli.Command{
		Name:      "draw",
		Usage:     "draw a request log as a picture of the device (PNG heat map, GIF animation or HTML page)",
		UsageText: "nbdloop draw [options] [--force] LOG -o OUT.png|OUT.gif|OUT.html",
		Description: "Reads LOG, the file written by --filter log:file=LOG, and draws the device as a\n" +
			"square whose pixels follow a Hilbert curve, so that nearby offsets stay nearby,\n" +
			"coloured by the last request to touch them (blue read, red written, green\n" +
			"trimmed or zeroed) and brighter for more requests (log scale). A strip under the\n" +
			"square shows the requests over time, with the flushes as yellow ticks. The legend\n" +
			"gives the counts, the bytes per pixel and the curve. OUT.png is the whole run;\n" +
			"OUT.gif an animation, one frame per slice of time (or of requests, --by requests),\n" +
			"earlier frames dimmed; OUT.html one self-contained page with every frame, a time\n" +
			"slider, and the offset and request under the pointer. The log is read twice and\n" +
			"never held in memory.\n\n" +
			"EXAMPLE:\n" +
			"  # nbdloop attach --filter log:file=/tmp/mkfs.jsonl --run 'mkfs.ext4 -q $DEVICE' memory:1G\n" +
			"  # nbdloop draw /tmp/mkfs.jsonl -o mkfs.png",
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("draw: %v (see nbdloop draw --help)", err)
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the picture to `FILE`; .png, .gif or .html says which kind"},
			&cli.StringFlag{Name: "device-size", Usage: "the device's size in bytes (`SIZE`, e.g. 1G)", DefaultText: "the highest offset in LOG, rounded up to a power of two"},
			&cli.IntFlag{Name: "image-size", Value: 512, Usage: "width and height of the square in pixels: a power of two, `N` = 16..4096"},
			&cli.IntFlag{Name: "frames", Value: 50, Usage: fmt.Sprintf("`N` frames for .gif and .html, at most %d", pictures.MaxFrames)},
			&cli.StringFlag{Name: "by", Value: "time", Usage: "cut frames by equal spans of `time` or equal numbers of `requests`"},
			&cli.DurationFlag{Name: "delay", Value: 100 * time.Millisecond, Usage: "how long each GIF frame shows (`DURATION`, e.g. 200ms)"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite OUT if it exists"},
		},
		Action: doDraw,
	}
}

func doDraw(c *cli.Context) error {
	args, err := drawArgs(c)
	if err != nil {
		return err
	}
	log, out := args[0], c.String("output")
	if out == "" {
		return usageError("draw: no output given (add -o OUT.png, OUT.gif or OUT.html)")
	}
	var write func(io.Writer, io.ReadSeeker, pictures.Options) error
	switch strings.ToLower(filepath.Ext(out)) {
	case ".png":
		write = pictures.WritePNG
	case ".gif":
		write = pictures.WriteGIF
	case ".html", ".htm":
		write = pictures.WriteHTML
	default:
		return usageError("draw: %s: unknown kind of picture (name it .png, .gif or .html)", out)
	}
	opts := pictures.Options{Side: c.Int("image-size"), Frames: c.Int("frames"), Delay: c.Duration("delay"), Title: filepath.Base(log)}
	switch c.String("by") {
	case "time":
	case "requests":
		opts.ByRequests = true
	default:
		return usageError("draw: --by %q: use time or requests", c.String("by"))
	}
	if s := c.String("device-size"); s != "" {
		n, err := bytesize.Parse(s)
		if err != nil || n <= 0 {
			return usageError("draw: --device-size %q: not a size (e.g. 1G or 1073741824)", s)
		}
		opts.DeviceSize = uint64(n)
	}
	if n := opts.Side; n < 16 || n > 4096 || n&(n-1) != 0 {
		return usageError("draw: --image-size %d: not a power of two from 16 to 4096", n)
	}
	if opts.Frames < 1 || opts.Frames > pictures.MaxFrames {
		return usageError("draw: --frames %d: out of range 1..%d", opts.Frames, pictures.MaxFrames)
	}
	if opts.Delay < 10*time.Millisecond {
		return usageError("draw: --delay %v: at least 10ms (GIF counts in hundredths of a second)", opts.Delay)
	}
	in, err := os.Open(log)
	if err != nil {
		return fmt.Errorf("draw: %w", err)
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil {
		return fmt.Errorf("draw: %w", err)
	} else if !st.Mode().IsRegular() {
		return fmt.Errorf("draw: %s: not a regular file (LOG is read twice: save it to a file first)", log)
	}
	// Written next to OUT and moved into place, so a failed or interrupted
	// draw leaves no half picture, and an existing OUT is replaced only
	// with --force, as pack does.
	if _, err := os.Lstat(out); err == nil && !c.Bool("force") {
		return fmt.Errorf("draw: %s: already exists (remove it, or add --force)", out)
	}
	w, err := newSafeOutput(out, c.Bool("force"))
	if err != nil {
		return fmt.Errorf("draw: %w", err)
	}
	defer w.abort()
	if err := write(w.f, in, opts); err != nil {
		return fmt.Errorf("draw: %s: %w%s", log, err, drawHint(err))
	}
	if err := w.commit(); err != nil {
		return fmt.Errorf("draw: %s: %w", out, err)
	}
	return nil
}

// drawArgs returns LOG, the one operand (options anywhere are read by
// permuteArgs).
func drawArgs(c *cli.Context) ([]string, error) {
	args := c.Args().Slice()
	switch {
	case len(args) == 0:
		return nil, usageError("draw: no LOG given (e.g. nbdloop draw /tmp/mkfs.jsonl -o mkfs.png)")
	case len(args) > 1:
		return nil, usageError("draw: one LOG expected, got %s (see nbdloop draw --help)", strings.Join(args, " "))
	}
	return args, nil
}

// drawHint says what to do about an error of the log.
func drawHint(err error) string {
	switch {
	case errors.Is(err, pictures.ErrEmptyLog):
		return " (was the device used? the log filter writes a line per request)"
	case errors.Is(err, pictures.ErrUnknownSize):
		return " (give --device-size)"
	case errors.As(err, new(*pictures.LineError)):
		return " (is it a file written by --filter log:file=...?)"
	}
	return ""
}
