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
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
)

// defaultMaxConnections is --max-connections when not given: room for a
// few clients that open several connections each (nbdcopy opens four).
const defaultMaxConnections = 16

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:        "serve",
		Usage:       "serve SOURCEs to NBD clients over TCP or a Unix socket, in the foreground or the background",
		UsageText:   "nbdloop serve [--background] [--listen [ADDR]:PORT] [--unix PATH] [--export NAME=SOURCE]... [options] [SOURCE]\nnbdloop serve --stop ADDRESS",
		Description: serveDescription(),
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("serve: %v (see nbdloop serve --help)", err)
		},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "background", Usage: "serve from a supervised background process; exit once it listens"},
			&cli.StringFlag{Name: "stop", Usage: "stop the background serve listening on `ADDRESS` (or the socket path, or its supervisor's pid)"},
			&cli.StringFlag{Name: "listen", Aliases: []string{"l"}, Usage: "listen on TCP `[ADDR]:PORT` (port " + attach.DefaultPort + " when only ADDR is given; :0 picks a free port, logged)"},
			&cli.StringFlag{Name: "unix", Aliases: []string{"U"}, Usage: "listen on the Unix socket `PATH`"},
			&cli.StringSliceFlag{Name: "export", Aliases: []string{"e"}, Usage: "serve SOURCE as the export NAME, given as `NAME=SOURCE` (repeatable)"},
			&cli.BoolFlag{Name: "read-only", Aliases: []string{"r"}, Usage: "serve every export read-only (writes fail with EPERM)"},
			&cli.StringFlag{Name: "tls", Usage: "TLS `MODE`: off, on (offered to clients) or require (before any option but STARTTLS)", DefaultText: "on when certificates are found, else off"},
			&cli.StringFlag{Name: "tls-certificates", Usage: "read the certificate from `DIR` (ca-cert.pem, server-cert.pem, server-key.pem)", DefaultText: "/etc/nbdloop/pki, or ~/.config/nbdloop/pki for users"},
			&cli.BoolFlag{Name: "tls-verify-peer", Usage: "refuse clients without a certificate signed by ca-cert.pem"},
			&cli.IntFlag{Name: "max-connections", Value: defaultMaxConnections, Usage: "serve at most `N` clients at once; more are closed before the greeting (0: no limit)"},
			&cli.StringFlag{Name: "idle-timeout", Value: "0", Usage: "disconnect a client that sends and is sent nothing for `SECONDS` after its handshake (0: never)"},
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
	nc.SocketActivation = attach.SocketActivated()
	if nc.Listen == "" && nc.Unix == "" && !nc.SocketActivation {
		nc.Listen = attach.ListenAddress("")
	}
	if err := tlsFromFlags(c, &nc); err != nil {
		return nc, err
	}
	if nc.HandshakeTimeout, err = parseSeconds("handshake-timeout", c.String("handshake-timeout")); err != nil {
		return nc, usageError("serve: --handshake-timeout %q: not a number of seconds (e.g. 10 or 1m)", c.String("handshake-timeout"))
	}
	if nc.HandshakeTimeout == 0 {
		return nc, usageError("serve: --handshake-timeout 0: must be at least 1 second")
	}
	nc.MaxClients = c.Int("max-connections")
	if nc.IdleTimeout, err = parseSeconds("idle-timeout", c.String("idle-timeout")); err != nil {
		return nc, usageError("serve: --idle-timeout %q: not a number of seconds (e.g. 300 or 5m)", c.String("idle-timeout"))
	}
	if err := nc.Validate(); err != nil {
		return nc, usageError("serve: %v", err)
	}
	return nc, nil
}

// tlsFromFlags sets nc's TLS from --tls, --tls-certificates and
// --tls-verify-peer.
func tlsFromFlags(c *cli.Context, nc *attach.NetConfig) error {
	nc.TLSCertificates = c.String("tls-certificates")
	nc.TLSVerifyPeer = c.Bool("tls-verify-peer")
	if !c.IsSet("tls") {
		nc.TLS = attach.DefaultTLSMode(nc.TLSCertificates)
		return nil
	}
	for _, m := range []nbd.TLSMode{nbd.TLSOff, nbd.TLSOn, nbd.TLSRequire} {
		if c.String("tls") == m.String() {
			nc.TLS = m
			return nil
		}
	}
	return usageError("serve: --tls %q: use off, on or require", c.String("tls"))
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
	if c.IsSet("stop") {
		if c.NArg() > 0 || c.NumFlags() > 1 {
			return usageError("serve: --stop ADDRESS takes nothing else")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return attach.StopServed(ctx, c.String("stop"))
	}
	nc, err := netConfigFromFlags(c)
	if err != nil {
		return err
	}
	if c.Bool("background") {
		if nc.SocketActivation {
			return usageError("serve: --background does not apply under socket activation (the service manager that passed the sockets supervises serve)")
		}
		// The record names the socket for serve --stop from anywhere.
		if nc.Unix != "" {
			if nc.Unix, err = filepath.Abs(nc.Unix); err != nil {
				return usageError("serve: --unix %s: %v", nc.Unix, err)
			}
		}
		st, err := attach.NetStart(nc)
		if err != nil {
			return err
		}
		for _, l := range st.Listen {
			fmt.Fprintf(c.App.Writer, "listening on %s\n", l)
		}
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := log.New(c.App.ErrWriter, "nbdloop: ", log.LstdFlags|log.Lmicroseconds)
	return attach.NetServe(ctx, nc, logger, func(addrs []net.Addr, _ []attach.NetExportState) {
		for _, a := range addrs {
			logger.Printf("listening on %s %s", a.Network(), a)
		}
	})
}
