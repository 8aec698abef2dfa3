package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "serve SOURCEs to NBD clients over TCP or a Unix socket, in the foreground",
		UsageText: "nbdloop serve [--listen [ADDR]:PORT] [--unix PATH] [--export NAME=SOURCE]... [options] [SOURCE]",
		Description: "Serves SOURCE, and each --export, to NBD clients on the network (qemu-img,\n" +
			"qemu-io, nbdinfo, nbdcopy, nbdsh and other clients of the NBD protocol).\n" +
			"SOURCE is anything attach takes (formats, memory:, exec:, --filter),\n" +
			"opened the way attach opens it; SOURCE is the default export (the empty name),\n" +
			"and without it the first --export is. Listens on TCP (--listen; port " + attach.DefaultPort + "\n" +
			"when none is given, on every address when neither --listen nor --unix is) and\n" +
			"on a Unix socket (--unix), serves until SIGINT or SIGTERM, then flushes every\n" +
			"export and exits 0. One line per client goes to stderr: its address and export.\n" +
			"Needs no root.\n\n" +
			"Clients negotiate with the fixed newstyle handshake (NBD_OPT_GO, INFO,\n" +
			"EXPORT_NAME, LIST, ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT with\n" +
			"base:allocation; other options are refused as unsupported) and get the\n" +
			"export's size, flags and block sizes (minimum 1, or 512 with --direct-io;\n" +
			"preferred 4096; maximum 32M). Block status (nbdinfo --map, qemu-img map)\n" +
			"shows the holes of sparse files, memory: exports and qcow2 images, which\n" +
			"nbdcopy and qemu-img convert skip; VMDK and compressed images are all data.\n" +
			"A client that sends garbage or oversized options, or takes longer than\n" +
			"--handshake-timeout to choose an export, loses its connection, not the\n" +
			"server. There is no TLS yet: serve on a trusted network, or on a Unix\n" +
			"socket.\n\n" +
			"EXAMPLES:\n" +
			"  $ nbdloop serve --listen 127.0.0.1 disk.img.xz\n" +
			"  $ qemu-img convert -O qcow2 nbd://127.0.0.1 disk.qcow2\n" +
			"  $ nbdloop serve --unix /tmp/nbd.sock --export a=a.img --export b=memory:1G\n" +
			"  $ nbdinfo --list 'nbd+unix:///?socket=/tmp/nbd.sock'\n\n" + sourceHelp + "\n\n" + filters.Help(),
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("serve: %v (see nbdloop serve --help)", err)
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Aliases: []string{"l"}, Usage: "listen on TCP `[ADDR]:PORT` (port " + attach.DefaultPort + " when only ADDR is given; :0 picks a free port, logged)"},
			&cli.StringFlag{Name: "unix", Aliases: []string{"U"}, Usage: "listen on the Unix socket `PATH`"},
			&cli.StringSliceFlag{Name: "export", Aliases: []string{"e"}, Usage: "serve SOURCE as the export NAME, given as `NAME=SOURCE` (repeatable)"},
			&cli.BoolFlag{Name: "read-only", Aliases: []string{"r"}, Usage: "serve every export read-only (writes fail with EPERM)"},
			&cli.StringFlag{Name: "handshake-timeout", Value: fmt.Sprint(nbd.DefaultHandshakeTimeout.Seconds()), Usage: "`SECONDS` a client may take to choose an export"},
			&cli.StringFlag{Name: "format", Usage: "open every file as `FORMAT` (" + strings.Join(attach.FormatNames(), ", ") + ") instead of probing its contents"},
			&cli.BoolFlag{Name: "direct-io", Usage: "open files with O_DIRECT (bypass the page cache)"},
			&cli.StringFlag{Name: "cache-size", Value: fmt.Sprintf("%dM", attach.DefaultCacheSize>>20), Usage: "memory for decoded data of each compressed image (xz, gzip, zstd), in `SIZE` bytes"},
			&cli.StringFlag{Name: "metadata-limit", Value: fmt.Sprintf("%dM", sources.DefaultMetadataLimit>>20), Usage: "memory for each export's image metadata, in `SIZE` bytes"},
			&cli.StringFlag{Name: "spill-limit", Usage: "largest temporary file a compressed image of one big block is decoded into, in `SIZE` bytes", DefaultText: "64G"},
			&cli.StringSliceFlag{Name: "allow-path", Usage: "let the files an image names be beneath `DIR` too (repeatable)"},
			&cli.BoolFlag{Name: "allow-devices", Usage: "let the files an image names be block devices"},
			&cli.BoolFlag{Name: "no-lock", Usage: "take no locks on the image files"},
			filterFlag(),
		},
		Action: doServe,
	}
}

// netConfigFromFlags builds the request; errors are usage errors.
func netConfigFromFlags(c *cli.Context) (attach.NetConfig, error) {
	var nc attach.NetConfig
	if c.NArg() > 1 {
		return nc, usageError("serve: one SOURCE expected, got %d: %s (serve more as --export NAME=SOURCE)", c.NArg(), strings.Join(c.Args().Slice(), " "))
	}
	base, err := serveSourceFlags(c)
	if err != nil {
		return nc, err
	}
	if c.NArg() == 1 {
		cfg := base
		cfg.Source = c.Args().First()
		nc.Exports = append(nc.Exports, attach.NetExport{Name: "", Config: cfg})
	}
	for _, e := range c.StringSlice("export") {
		name, src, ok := strings.Cut(e, "=")
		if !ok || src == "" {
			return nc, usageError("serve: --export %q: not NAME=SOURCE (e.g. --export disk=disk.img)", e)
		}
		cfg := base
		cfg.Source = src
		nc.Exports = append(nc.Exports, attach.NetExport{Name: name, Config: cfg})
	}
	if l := c.String("listen"); c.IsSet("listen") {
		nc.Listen = attach.ListenAddress(l)
	}
	nc.Unix = c.String("unix")
	if nc.Listen == "" && nc.Unix == "" {
		nc.Listen = attach.ListenAddress("")
	}
	if nc.HandshakeTimeout, err = parseSeconds("handshake-timeout", c.String("handshake-timeout")); err != nil {
		return nc, usageError("serve: --handshake-timeout %q: not a number of seconds (e.g. 10 or 1m)", c.String("handshake-timeout"))
	}
	if nc.HandshakeTimeout == 0 {
		return nc, usageError("serve: --handshake-timeout 0: must be at least 1 second")
	}
	if err := nc.Validate(); err != nil {
		return nc, usageError("serve: %v", err)
	}
	return nc, nil
}

// serveSourceFlags returns a Config with the source flags that apply to
// every export.
func serveSourceFlags(c *cli.Context) (attach.Config, error) {
	cfg := attach.NewConfig("")
	cfg.Connections = 1 // unused: clients make their own connections
	cfg.ReadOnly = c.Bool("read-only")
	cfg.DirectIO = c.Bool("direct-io")
	cfg.Format = c.String("format")
	cfg.AllowDevices = c.Bool("allow-devices")
	cfg.NoLock = c.Bool("no-lock")
	cfg.Filters = filterSpecs(c)
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"cache-size", &cfg.CacheSize}, {"metadata-limit", &cfg.MetadataLimit}, {"spill-limit", &cfg.SpillLimit}} {
		if s := c.String(f.name); s != "" {
			v, err := bytesize.Parse(s)
			if err != nil {
				return cfg, usageError("serve: --%s %q: %v", f.name, s, err)
			}
			*f.dst = v
		}
	}
	for _, d := range c.StringSlice("allow-path") {
		abs, err := filepath.Abs(d)
		if err != nil {
			return cfg, usageError("serve: --allow-path %s: %v", d, err)
		}
		cfg.AllowPaths = append(cfg.AllowPaths, abs)
	}
	return cfg, nil
}

func doServe(c *cli.Context) error {
	nc, err := netConfigFromFlags(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := log.New(c.App.ErrWriter, "nbdloop: ", log.LstdFlags|log.Lmicroseconds)
	return attach.NetServe(ctx, nc, logger, func(addrs []net.Addr) {
		for _, a := range addrs {
			logger.Printf("listening on %s %s", a.Network(), a)
		}
	})
}
