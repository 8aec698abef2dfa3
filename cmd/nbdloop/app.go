package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/s3src"
)

const appDescription = `nbdloop attaches a file, a block device or a RAM disk to a Linux Network
Block Device (/dev/nbdN) in one command, the way losetup attaches files to
loop devices. The NBD server runs in a background nbdloop process, which hands
its sockets to the kernel over the NBD generic netlink interface: no nbd-client,
no TCP port, no second daemon. attach prints the device name and returns once
the device is usable; detach disconnects it and waits until the server has
flushed and exited.

Options go anywhere on the command line, before or after the SOURCE, as with
losetup and other getopt tools; -- ends them (nbdloop attach -- -r.img).

` + sourceHelp + `

The server process protects itself from memory-reclaim deadlocks
(PR_SET_IO_FLUSHER, oom_score_adj -1000, mlockall for file sources), keeps
a state record in /run/nbdloop/nbdN.json and logs to /run/nbdloop/nbdN.log.

` + restartHelp + `

` + untrustedHelp + `

` + nothingLostHelp + `

` + mountHelp + `

` + kernelsHelp + `

EXAMPLES:
  # nbdloop attach disk.img
  /dev/nbd0
  # nbdloop attach disk.img -r --json
  # nbdloop       (lists the devices, as losetup does: nbdloop list)
  # nbdloop attach -v disk.img      (each step on stderr)
  # nbdloop attach -r --partscan disk.img && mount -o ro /dev/nbd1p1 /mnt
  # nbdloop attach memory:8E      (a sparse 8 EiB RAM disk)
  # nbdloop list --json
  # nbdloop attach --run 'mkfs.ext4 -q $DEVICE' disk.img
  # nbdloop attach -P --partitions boot.img swap.img root.img   (/dev/nbd2p1..p3)
  # nbdloop attach --concat a.img b.img c.img
  # nbdloop attach --partition 2 disk.img
  # nbdloop detach /dev/nbd0      (or: nbdloop detach -a)

EXIT STATUS:
  0 success; 1 failure; 2 bad command line. attach --run exits with the
  command's status (128+N if it was killed by signal N).

` + environmentHelp + `

` + filesHelp

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "nbdloop",
		Usage:                "attach files, RAM disks, images, compressed files, programs and composites to Linux NBD devices",
		UsageText:            "nbdloop attach [options] SOURCE\nnbdloop detach DEVICE... | -a\nnbdloop [list] [-n] [-O COLUMNS] [--raw] [--json] [--associated FILE] [DEVICE...]\nnbdloop restart DEVICE\nnbdloop create --size SIZE [--object-size SIZE] s3://BUCKET/PREFIX\nnbdloop stats [--json] DEVICE...\nnbdloop pack [options] IMAGE -o OUT.xz|OUT.zst\nnbdloop draw [options] LOG -o OUT.png|OUT.gif|OUT.html\nnbdloop top [--once] DEVICE",
		Description:          appDescription,
		Version:              version,
		HideVersion:          true, // -V, as losetup and nbd-client have it; -v is attach's --verbose
		Flags:                []cli.Flag{&cli.BoolFlag{Name: "version", Aliases: []string{"V"}, Usage: "print the version"}},
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		// Errors are printed once, by run, with the "nbdloop: " prefix.
		ExitErrHandler: func(*cli.Context, error) {},
		Before: func(c *cli.Context) error {
			if c.Bool("version") {
				fmt.Fprintf(c.App.Writer, "%s version %s\n", c.App.Name, c.App.Version)
				return cli.Exit("", exitOK)
			}
			return nil
		},
		// Only the root's own flags: each command has its OnUsageError.
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("%v (see nbdloop --help)", err)
		},
		// `nbdloop foo` reaches the root action, which returns the usage
		// error to run like every other one. CommandNotFound, which cannot
		// return an error, is left for `nbdloop --help foo`.
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageError("%s: unknown command (use attach, detach, list or see nbdloop --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(stderr, "nbdloop: %s: unknown command (use attach, detach, list or see nbdloop --help)\n", name)
			os.Exit(exitUsage)
		},
		Commands: []*cli.Command{attachCommand(), detachCommand(), listCommand(), restartCommand(), resizeCommand(), createCommand(), nbdtabCommand(), statsCommand(), packCommand(), drawCommand(), topCommand(), serveCommand(), manCommand(), completionCommand()},
	}
	return app
}

func attachCommand() *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "attach SOURCE to an nbd device and print the device's name",
		UsageText: "nbdloop attach [options] SOURCE\nnbdloop attach --concat [options] SOURCE...\nnbdloop attach --partitions [--table gpt|mbr] [--align SIZE] [--type N=TYPE]... [options] SOURCE...\nnbdloop attach --partition N [options] SOURCE",
		Description: "Starts a server process for SOURCE, connects it to the first free nbd device\n" +
			"(or --device) and prints the device's name once it is usable.\n\n" + sourceHelp + "\n\n" + compositeHelp + "\n\n" + filters.Help(),
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("attach: %v (see nbdloop attach --help)", err)
		},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "find", Aliases: []string{"f"}, Usage: "use the first free device (the default)"},
			&cli.StringFlag{Name: "driver", Value: attach.DriverNBD, Usage: "serve through the kernel's `DRIVER`: nbd (/dev/nbdN) or ublk (/dev/ublkbN: io_uring, Linux 6.0+ with ublk_drv; restarts take the device over with ublk's user recovery; no --partscan or --autoclear)"},
			&cli.StringFlag{Name: "device", Usage: "attach to `/dev/nbdN` (/dev/ublkbN with --driver ublk) instead of the first free device"},
			&cli.BoolFlag{Name: "read-only", Aliases: []string{"r"}, Usage: "attach read-only"},
			&cli.BoolFlag{Name: "partscan", Aliases: []string{"P"}, Usage: "scan the partition table and return once every /dev/nbdNpK exists"},
			&cli.StringFlag{Name: "block-size", Aliases: []string{"b"}, Value: "512", Usage: "logical sector `SIZE` in bytes: 512, 1024, 2048 or 4096"},
			&cli.IntFlag{Name: "connections", Aliases: []string{"c"}, Value: attach.DefaultConnections(), Usage: "use `N` sockets between kernel and server", DefaultText: "CPUs, at most 4"},
			&cli.StringFlag{Name: "timeout", Value: "0", Usage: "`SECONDS` before the kernel fails a slow request (0: never)"},
			&cli.StringFlag{Name: "dead-timeout", Value: "30", Usage: "`SECONDS` the kernel holds I/O after the server dies, waiting for a restart"},
			&cli.StringFlag{Name: "offset", Aliases: []string{"o"}, Usage: "start the device at byte `OFFSET` of the file (raw and compressed files)"},
			&cli.StringFlag{Name: "sizelimit", Usage: "use at most `SIZE` bytes of the file"},
			newOnOffFlag("direct-io", "open the file with O_DIRECT (bypass the page cache; raw and compressed files, not qcow2 or VMDK)"),
			&cli.StringFlag{Name: "cache-size", Value: fmt.Sprintf("%dM", attach.DefaultCacheSize>>20), Usage: "memory for decoded data of compressed images (xz, gzip, zstd) and fetched blocks of URLs, shared by all connections, in `SIZE` bytes"},
			&cli.StringFlag{Name: "cache-dir", Usage: "keep the fetched blocks of http(s):// SOURCEs in `DIR` too, within --cache-size for all the objects of the device together (the image, its backing files or extents), checked when read back, for a restart or a later attach of the same object (also served from there when the server does not answer); DIR must be writable by its owner only"},
			&cli.StringFlag{Name: "format", Usage: "open the file as `FORMAT` (" + strings.Join(attach.FormatNames(), ", ") + ") instead of probing its contents; with raw, the guest may write any first sector"},
			&cli.StringSliceFlag{Name: "allow-path", Usage: "let the files an image names (backing files, extents, parents) be beneath `DIR` too, not only beneath the image's own directory (repeatable)"},
			&cli.BoolFlag{Name: "no-lock", Usage: "take no locks on the image files (by default a writable device locks its files against other writers and readers, a read-only one against writers, as qemu does)"},
			&cli.BoolFlag{Name: "allow-devices", Usage: "let the files an image names be block devices"},
			&cli.StringFlag{Name: "metadata-limit", Value: fmt.Sprintf("%dM", sources.DefaultMetadataLimit>>20), Usage: "memory for image metadata (qcow2 and VMDK tables, compressed images' indexes), all files of the device together, in `SIZE` bytes; an image that needs more is refused"},
			&cli.StringFlag{Name: "spill-limit", Usage: "largest temporary file a compressed image of one big block is decoded into, in `SIZE` bytes; it is also kept 1G (or a tenth of the file system) short of filling $TMPDIR", DefaultText: "64G"},
			&cli.StringFlag{Name: "s3-profile", Usage: "read an s3:// SOURCE with the credentials and settings of the AWS profile `NAME` (instead of AWS_PROFILE's or the default)"},
			&cli.StringFlag{Name: "s3-endpoint", Usage: "read an s3:// SOURCE from the store at `URL` (http://HOST:PORT, addressed path-style) instead of the one the AWS configuration names, or AWS's"},
			filterFlag(),
			concatFlag(), partitionsFlag(), tableFlag(), alignFlag(), typeFlag(), espFlag(), partitionFlag(),
			&cli.BoolFlag{Name: "foreground", Usage: "serve in this process until detached or signalled (no restarts)"},
			&cli.BoolFlag{Name: "no-restart", Usage: "do not restart the server if it dies (the device then fails I/O after --dead-timeout)"},
			&cli.BoolFlag{Name: "autoclear", Usage: "once mounted or held, detach the device when its last opener closes it (as mount -o loop does; mount.nbdloop sets it)"},
			&cli.StringFlag{Name: "run", Usage: "attach, run sh -c `CMD` with DEVICE=/dev/nbdN (or /dev/ublkbN), detach, exit with its status"},
			&cli.BoolFlag{Name: "json", Usage: "print the device as a JSON object"},
			&cli.BoolFlag{Name: "show", Usage: "print the device's name (accepted for losetup's sake: attach always prints it)"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "say what attach does, step by step, on stderr: the request, pinning the files, starting the supervisor and server, probing the format, CONNECT, settling"},
		},
		BashComplete: completeAttach,
		Action:       doAttach,
	}
}

func detachCommand() *cli.Command {
	return &cli.Command{
		Name:      "detach",
		Usage:     "disconnect nbd devices and stop their servers",
		UsageText: "nbdloop detach [--force] DEVICE...\nnbdloop detach -a",
		Description: "Disconnects each DEVICE (/dev/nbdN, or /dev/ublkbN of attach --driver ublk)\n" +
			"and waits until its server process has flushed and\n" +
			"exited and the device is free again. Works when the server has died, and on\n" +
			"devices attached by nbd-client or qemu-nbd. A device that is mounted or held\n" +
			"(directly or through a partition) is refused unless --force: disconnecting\n" +
			"fails the I/O in flight.",
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("detach: %v (see nbdloop detach --help)", err)
		},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "detach every device attached by nbdloop"},
			&cli.BoolFlag{Name: "force", Usage: "detach even if mounted or held"},
			&cli.BoolFlag{Name: "stats", Usage: "print the final statistics of devices attached with --filter stats"},
		},
		BashComplete: completeDevices,
		Action:       doDetach,
	}
}

func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the nbdloop(8) man page (roff)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			s, err := manPage(c.App, manStamp())
			if err != nil {
				return err
			}
			_, err = io.WriteString(c.App.Writer, s)
			return err
		},
	}
}

func completeDevices(c *cli.Context) {
	if n := len(os.Args); n > 2 && strings.HasPrefix(os.Args[n-2], "-") {
		cli.DefaultCompleteWithFlags(c.Command)(c)
		return
	}
	devs, err := attach.List(nil)
	if err != nil {
		return
	}
	for _, d := range devs {
		fmt.Fprintln(c.App.Writer, d.Name)
	}
}

func requireRoot(cmd string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s: permission denied (run as root: sudo nbdloop %s ...)", cmd, cmd)
	}
	return nil
}

// parseSeconds reads a timeout: plain seconds ("30") or a Go duration
// ("30s", "2m").
func parseSeconds(flag, s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d%time.Second != 0 {
		return 0, usageError("attach: --%s %q: not a number of seconds (e.g. 30 or 2m)", flag, s)
	}
	return d, nil
}

// parseUblkDevice accepts /dev/ublkbN, ublkbN or N and returns N.
func parseUblkDevice(s string) (int, error) {
	if n, ok := attach.ParseUblkDevice(s); ok {
		return n, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && strconv.Itoa(n) == s {
		return n, nil
	}
	return 0, fmt.Errorf("%s: not a ublk device (use /dev/ublkbN)", s)
}

func configFromFlags(c *cli.Context) (attach.Config, error) {
	if c.NArg() != 1 && (c.NArg() == 0 || !multiSource(c)) {
		if c.NArg() == 0 {
			return attach.Config{}, usageError("attach: no SOURCE given (e.g. nbdloop attach disk.img)")
		}
		return attach.Config{}, usageError("attach: one SOURCE expected, got %d: %s (to combine files: --concat or --partitions)", c.NArg(), strings.Join(c.Args().Slice(), " "))
	}
	cfg := attach.NewConfig(c.Args().First())
	if err := compositeFromFlags(c, &cfg); err != nil {
		return cfg, err
	}
	cfg.ReadOnly = c.Bool("read-only")
	cfg.Driver = c.String("driver")
	cfg.PartScan = c.Bool("partscan")
	cfg.DirectIO = switchOn(c, "direct-io")
	cfg.Connections = c.Int("connections")
	if dev := c.String("device"); dev != "" {
		if c.Bool("find") {
			return cfg, usageError("attach: --find and --device exclude each other")
		}
		idx, err := attach.ParseDevice(dev)
		if cfg.Driver == attach.DriverUblk {
			idx, err = parseUblkDevice(dev)
		}
		if err != nil {
			return cfg, usageError("attach: --device %v", err)
		}
		cfg.Index = idx
	}
	bs, err := bytesize.Parse(c.String("block-size"))
	if err != nil {
		return cfg, usageError("attach: --block-size %q: %v", c.String("block-size"), err)
	}
	cfg.BlockSize = bs
	if cfg.Timeout, err = parseSeconds("timeout", c.String("timeout")); err != nil {
		return cfg, err
	}
	if cfg.DeadTimeout, err = parseSeconds("dead-timeout", c.String("dead-timeout")); err != nil {
		return cfg, err
	}
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"offset", &cfg.Offset}, {"sizelimit", &cfg.SizeLimit}, {"cache-size", &cfg.CacheSize},
		{"metadata-limit", &cfg.MetadataLimit}, {"spill-limit", &cfg.SpillLimit}} {
		if s := c.String(f.name); s != "" {
			if *f.dst, err = bytesize.Parse(s); err != nil {
				return cfg, usageError("attach: --%s %q: %v", f.name, s, err)
			}
		}
	}
	cfg.Filters = filterSpecs(c)
	cfg.Format = c.String("format")
	if d := c.String("cache-dir"); d != "" {
		abs, err := filepath.Abs(d)
		if err != nil {
			return cfg, usageError("attach: --cache-dir %s: %v", d, err)
		}
		cfg.CacheDir = abs
	}
	cfg.AllowDevices = c.Bool("allow-devices")
	cfg.NoLock = c.Bool("no-lock")
	for _, d := range c.StringSlice("allow-path") {
		abs, err := filepath.Abs(d)
		if err != nil {
			return cfg, usageError("attach: --allow-path %s: %v", d, err)
		}
		cfg.AllowPaths = append(cfg.AllowPaths, abs)
	}
	cfg.S3Profile, cfg.S3Endpoint = c.String("s3-profile"), c.String("s3-endpoint")
	if (cfg.S3Profile != "" || cfg.S3Endpoint != "") && !slices.ContainsFunc(append([]string{cfg.Source}, cfg.Sources...), s3src.IsURL) {
		return cfg, usageError("attach: --s3-profile and --s3-endpoint apply to s3:// SOURCEs only (omit them)")
	}
	cfg.NoRestart = c.Bool("no-restart")
	if c.IsSet("run") && strings.TrimSpace(c.String("run")) == "" {
		return cfg, usageError("attach: --run: no command given (e.g. --run 'mkfs.ext4 -q $DEVICE')")
	}
	cfg.Autoclear = c.Bool("autoclear")
	if c.Bool("foreground") && c.String("run") != "" {
		return cfg, usageError("attach: --foreground and --run exclude each other")
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError("attach: %v", err)
	}
	return cfg, nil
}

func printWarnings(c *cli.Context, warns []string) {
	for _, w := range warns {
		fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s\n", w)
	}
}

func printDevice(c *cli.Context, d *attach.Device) {
	if c.Bool("json") {
		b, _ := json.Marshal(d)
		fmt.Fprintln(c.App.Writer, string(b))
		return
	}
	fmt.Fprintln(c.App.Writer, d.Name)
}

func doAttach(c *cli.Context) error {
	cfg, err := configFromFlags(c)
	if err != nil {
		return err
	}
	ctx, trace := verboseContext(context.Background(), c.App.ErrWriter, c.Bool("verbose"))
	trace("parsing: %s", describeConfig(cfg))
	if err := requireRoot("attach"); err != nil {
		return err
	}
	prog := newAttachProgress(c.App.ErrWriter)
	cfg.Progress = prog.report
	if c.Bool("foreground") {
		attach.ReexecWithIOFlusher()
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return attach.Foreground(ctx, cfg, func(d *attach.Device, warns []string) {
			prog.done()
			printWarnings(c, warns)
			printDevice(c, d)
		})
	}
	d, warns, err := attach.Attach(ctx, cfg)
	prog.done()
	printWarnings(c, warns)
	if err != nil {
		return err
	}
	if cmd := c.String("run"); cmd != "" {
		trace("running sh -c %q with DEVICE=%s; detaching when it ends", cmd, d.Name)
		return runAndDetach(c, d, cmd)
	}
	printDevice(c, d)
	return nil
}

// detachDevice detaches the device d describes, through the driver that
// serves it (a ublk device's number is not an nbd device's).
func detachDevice(ctx context.Context, d *attach.Device, force bool) error {
	if d.Driver == attach.DriverUblk {
		return attach.DetachUblk(ctx, d.Index, force)
	}
	return attach.Detach(ctx, d.Index, force)
}

// runAndDetach runs cmd with DEVICE set, then detaches, on every exit path:
// the signals that would end nbdloop are caught and passed to the command
// instead, and detach follows once it has exited.
func runAndDetach(c *cli.Context, d *attach.Device, command string) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), "DEVICE="+d.Name)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, c.App.Writer, c.App.ErrWriter
	status := 0
	if err := cmd.Start(); err != nil {
		status = 127
		fmt.Fprintf(c.App.ErrWriter, "nbdloop: --run: %v\n", err)
	} else {
		done := make(chan struct{})
		go func() {
			for {
				select {
				case s := <-sigs:
					cmd.Process.Signal(s)
				case <-done:
					return
				}
			}
		}()
		err := cmd.Wait()
		close(done)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				status = 128 + int(ws.Signal())
			} else {
				status = ee.ExitCode()
			}
		} else if err != nil {
			status = 1
		}
	}
	err := detachDevice(context.Background(), d, false)
	var inUse *attach.InUseError
	if errors.As(err, &inUse) {
		fmt.Fprintf(c.App.ErrWriter, "nbdloop: warning: %v; the command left it in use, detaching anyway\n", err)
		err = detachDevice(context.Background(), d, true)
	}
	if err != nil {
		fmt.Fprintf(c.App.ErrWriter, "nbdloop: %v\n", err)
		if status == 0 {
			status = exitError
		}
	}
	if status != 0 {
		return cli.Exit("", status)
	}
	return nil
}

func doDetach(c *cli.Context) error {
	var indices []int
	if c.Bool("all") {
		if c.NArg() > 0 {
			return usageError("detach: -a takes no DEVICE")
		}
	} else if c.NArg() == 0 {
		return usageError("detach: no DEVICE given (e.g. nbdloop detach /dev/nbd0, or -a)")
	}
	var ublks []int
	for _, a := range c.Args().Slice() {
		if id, ok := attach.ParseUblkDevice(a); ok {
			ublks = append(ublks, id)
			continue
		}
		idx, err := attach.ParseDevice(a)
		if err != nil {
			return usageError("detach: %v", err)
		}
		indices = append(indices, idx)
	}
	if err := requireRoot("detach"); err != nil {
		return err
	}
	if c.Bool("all") {
		devs, err := attach.List(nil)
		if err != nil {
			return err
		}
		for _, d := range devs {
			switch {
			case d.Driver == attach.DriverUblk:
				ublks = append(ublks, d.Index)
			case d.State != attach.StateForeign:
				indices = append(indices, d.Index)
			}
		}
	}
	failed := 0
	for _, idx := range indices {
		if err := detachWithStats(c, idx, false, c.Bool("force"), c.Bool("stats")); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s\n", oneLine(err.Error()))
			failed++
		}
	}
	for _, id := range ublks {
		if err := detachWithStats(c, id, true, c.Bool("force"), c.Bool("stats")); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s\n", oneLine(err.Error()))
			failed++
		}
	}
	if failed > 0 {
		return cli.Exit("", exitError)
	}
	return nil
}
