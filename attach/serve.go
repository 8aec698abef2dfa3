package attach

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/kernel"
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
)

// Serve is the server process: it checks that the driver is there, opens
// the source (reporting the Progress of a pass over the file to
// cfg.Progress), starts serving the
// server ends of fresh socketpairs, hands the other ends to the kernel with
// NBD_CMD_CONNECT, waits until the device (and with PartScan its partitions)
// can be used, writes the state record and calls report exactly once. Then it
// serves until the kernel disconnects or ctx is cancelled (SIGTERM), in which
// case it flushes the source and disconnects the device itself.
//
// If report fails (the parent is gone), Serve undoes the attach: nobody
// would know about the device.
func Serve(ctx context.Context, cfg Config, daemon bool, report func(Result) error) error {
	return serve(ctx, realHost(), cfg, daemon, serveOptions{progress: cfg.Progress}, report)
}

// serveOptions are what a supervised server gets from its supervisor.
type serveOptions struct {
	// resume, when set, re-attaches the device it names with RECONFIGURE
	// instead of attaching a new one with CONNECT.
	resume *State
	// supervisor is the supervisor's pid, for the state record.
	supervisor int
	// memFile is the memfd of a memory: device.
	memFile *os.File
	// restartRequested asks the server to flush and exit without
	// disconnecting, so that the supervisor starts a new one: SIGUSR1
	// (restart) or SIGWINCH (resize: the new one serves the new size).
	restartRequested <-chan os.Signal
	// trace, when set, takes a line for each step (trace.go).
	trace Tracef
	// progress, when set, is told how far a JobIndex is, for attach.
	progress func(Progress)
}

func serve(ctx context.Context, h host, cfg Config, daemon bool, so serveOptions, report func(Result) error) error {
	if cfg.isUblk() {
		return serveUblk(ctx, h, cfg, daemon, so, report)
	}
	r := &serverRun{ctx: ctx, host: h, cfg: cfg, daemon: daemon, so: so, report: report,
		logger: log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)}
	defer r.cleanUp()
	for _, step := range []func() error{r.check, r.openDriver, r.openSource, r.startServing, r.handToKernel, r.settle, r.record} {
		if err := step(); err != nil {
			return r.fail(err)
		}
	}
	if err := r.tellAttach(); err != nil {
		return err
	}
	r.startAutoclear()
	return r.serveUntilEnd()
}

// serverRun is one server process's work, in the steps serve takes: check
// the request, open the driver (before the source, whose opening may take a
// pass over the whole file), open the source, start serving socketpairs, hand them to the
// kernel, wait for the device, write the record, tell attach, serve until
// the end.
type serverRun struct {
	ctx    context.Context
	host   host
	cfg    Config
	daemon bool
	so     serveOptions
	report func(Result) error
	logger *log.Logger
	res    Result
	undo   []func() // cleanUp runs them, last first

	spec       Spec
	notes      []string // from protect, for the log
	locks      imageLocks
	opened     *Opened
	src        sources.Source // the source, or the filter chain over it
	stack      *filters.Stack
	decode     *decodeLog // the background decode of a single-block image
	decodeOnce sync.Once

	fam         driver
	srv         *nbd.Server
	flags       uint64
	ro          bool
	kernelEnds  []int
	stopServing context.CancelFunc
	conns       sync.WaitGroup

	connected bool // CONNECT (or RECONFIGURE) succeeded: failures undo it
	index     int
	backendID string
	dev       string
	parts     []string
	st        *State
	handover  bool // the record is left for the next server
}

func (r *serverRun) deferUndo(f func()) { r.undo = append(r.undo, f) }

func (r *serverRun) cleanUp() {
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
}

// fail reports err to attach, after undoing a CONNECT already made.
func (r *serverRun) fail(err error) error {
	if r.connected {
		r.disconnect()
	}
	r.res.Error = err.Error()
	r.report(r.res)
	return err
}

// disconnect undoes the hand-over to the kernel: a new device is
// disconnected (a taken-over one is left to the supervisor), and the
// connections are ended.
func (r *serverRun) disconnect() {
	if r.so.resume == nil {
		r.fam.Disconnect(r.index)
	}
	r.stopServing()
	r.conns.Wait()
}

// check validates the request, protects the process and pins its files.
func (r *serverRun) check() error {
	r.so.trace.tracef("checking the request and the pinned files")
	if err := r.cfg.Validate(); err != nil {
		return err
	}
	spec, err := ParseSpec(r.cfg.Source)
	if err != nil {
		return err
	}
	r.spec = spec
	r.notes = r.host.protect(spec.Kind != KindMemory)
	if err := checkFiles(r.cfg.Files); err != nil {
		return err
	}
	// Locks before the files are opened (a reader's), upgraded to a
	// writer's once the source is known to be writable; held until exit.
	if !r.cfg.NoLock {
		if r.locks, err = lockFiles(r.cfg.Files); err != nil {
			return err
		}
		r.deferUndo(r.locks.Close)
	}
	return nil
}

// openSource opens the source and its filters.
func (r *serverRun) openSource() error {
	cfg, so := r.cfg, r.so
	oo := OpenOptions{
		ReadOnly: cfg.sourceReadOnly(), BlockSize: cfg.BlockSize,
		Offset: cfg.Offset, SizeLimit: cfg.SizeLimit, DirectIO: cfg.DirectIO,
		CacheSize: cfg.CacheSize, CacheDir: cfg.CacheDir, Composite: cfg.compositeOptions(), MemFile: so.memFile,
		Format: cfg.Format, AllowPaths: cfg.AllowPaths, AllowDevices: cfg.AllowDevices,
		MetadataLimit: cfg.MetadataLimit, SpillLimit: cfg.SpillLimit, Logf: r.logger.Printf,
		Progress:    r.progress,
		RemoteRetry: cfg.DeadTimeout,
		URLDeadline: cfg.urlDeadline(),
		S3Profile:   cfg.S3Profile, S3Endpoint: cfg.S3Endpoint,
	}
	if so.resume != nil {
		oo.ExpectFormat, oo.ExpectPin = so.resume.Format, so.resume.Pin
	}
	switch {
	case cfg.Format != "":
		so.trace.tracef("opening %s as %s (--format: not probed)", cfg.Source, cfg.Format)
	case r.spec.Kind == KindFile:
		so.trace.tracef("opening %s and probing its format", cfg.Source)
	default:
		so.trace.tracef("opening %s", cfg.Source)
	}
	opened, err := OpenSource(r.spec, oo)
	if err != nil {
		return err
	}
	rw := "read-write"
	if opened.Source.Caps().ReadOnly || cfg.ReadOnly {
		rw = "read-only"
	}
	so.trace.tracef("opened %s: %s, %d bytes, %s", opened.Desc, opened.Format, opened.Source.Size(), rw)
	r.opened, r.src = opened, opened.Source
	r.res.Warnings = append(r.res.Warnings, opened.Warnings...)
	src := opened.Source
	r.deferUndo(func() { src.Close() })
	if !src.Caps().ReadOnly && !cfg.ReadOnly {
		if err := r.locks.upgrade(); err != nil {
			return err
		}
	}
	if res := so.resume; res != nil && !res.Resize && src.Size() != res.Size {
		return fmt.Errorf("%s: the source now has %d bytes, not the device's %d: cannot restart the server (detach the device)", cfg.Source, src.Size(), res.Size)
	}
	stack, err := openFilters(src, cfg, so.resume != nil)
	if err != nil {
		return err
	}
	r.stack = stack
	if len(cfg.Filters) > 0 {
		r.src = stack.Source
		r.deferUndo(func() { stack.Source.Close() })
	}
	return nil
}

// openDriver opens the driver's netlink family: a machine without the
// driver fails here, before any work on the source.
func (r *serverRun) openDriver() error {
	r.so.trace.tracef("opening the nbd driver (generic netlink family nbd)")
	fam, err := r.host.openDriver()
	if err != nil {
		return err
	}
	r.fam = fam
	return nil
}

// startServing serves the server ends of one socketpair per connection.
// Serving starts before CONNECT: the kernel reads the partition table as
// soon as the device exists.
func (r *serverRun) startServing() error {
	r.so.trace.tracef("serving %d connections (socket pairs)", r.cfg.Connections)
	caps := r.src.Caps()
	r.ro = caps.ReadOnly || r.cfg.ReadOnly
	r.srv = nbd.NewServer(r.src, nbd.Options{Logf: r.logger.Printf, Observe: r.stack.ObserveFunc()})
	r.flags = nbd.TransmissionFlags(caps, r.cfg.Connections > 1)
	if r.cfg.ReadOnly {
		r.flags |= nbd.FlagReadOnly
	}
	r.deferUndo(r.closeKernelEnds)
	serveCtx, stop := context.WithCancel(context.Background())
	r.stopServing = stop
	r.deferUndo(stop)
	for i := 0; i < r.cfg.Connections; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("creating socketpair: %w", err)
		}
		r.kernelEnds = append(r.kernelEnds, fds[0])
		for _, fd := range fds {
			growSendBuffer(fd)
		}
		f := os.NewFile(uintptr(fds[1]), fmt.Sprintf("nbd-conn-%d", i))
		conn, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("creating socketpair: %w", err)
		}
		r.conns.Add(1)
		go func() {
			defer r.conns.Done()
			defer conn.Close()
			r.srv.ServeConn(serveCtx, conn, i)
		}()
	}
	return nil
}

func (r *serverRun) closeKernelEnds() {
	for _, fd := range r.kernelEnds {
		unix.Close(fd)
	}
	r.kernelEnds = nil
}

// handToKernel gives the kernel its ends of the socketpairs: CONNECT for a
// new device, RECONFIGURE for one taken over from a dead server. The
// kernel holds its own references afterwards.
func (r *serverRun) handToKernel() error {
	if res := r.so.resume; res != nil {
		r.index, r.backendID = res.Config.Index, res.BackendID
		err := r.fam.Reconfigure(kernel.ReconfigureRequest{Index: r.index, BackendID: r.backendID, Sockets: r.kernelEnds})
		r.closeKernelEnds()
		if err != nil {
			r.stopServing()
			r.conns.Wait()
			return fmt.Errorf("/dev/nbd%d: handing new connections to the kernel (RECONFIGURE): %w", r.index, err)
		}
		r.connected = true
		if err := r.resize(); err != nil {
			return err
		}
		r.parts, _ = r.host.sys.Partitions(r.index)
	} else {
		r.backendID = newBackendID()
		dev := "the first free device"
		if r.cfg.Index >= 0 {
			dev = deviceName(r.cfg.Index)
		}
		r.so.trace.tracef("NBD_CMD_CONNECT: %s, %d bytes, %d-byte blocks, %d sockets, flags %#x",
			dev, r.src.Size(), r.cfg.BlockSize, len(r.kernelEnds), r.flags)
		index, err := r.fam.Connect(kernel.ConnectRequest{
			Index:           r.cfg.Index,
			Size:            uint64(r.src.Size()),
			BlockSize:       uint64(r.cfg.BlockSize),
			Timeout:         r.cfg.Timeout,
			DeadConnTimeout: r.cfg.DeadTimeout,
			ServerFlags:     r.flags,
			BackendID:       r.backendID,
			Sockets:         r.kernelEnds,
		})
		r.closeKernelEnds()
		if err != nil {
			r.stopServing()
			r.conns.Wait()
			return connectError(r.cfg.Index, err)
		}
		r.index = index
	}
	r.connected = true
	r.dev = deviceName(r.index)
	r.so.trace.tracef("connected %s", r.dev)
	if d, ok := r.src.(interface{ SetDevice(dev string) }); ok {
		d.SetDevice(r.dev) // named in a disk's lease (sources/bucket)
	}
	return nil
}

// settle waits until a new device (and with -P its partitions) can be
// used.
func (r *serverRun) settle() error {
	if r.so.resume != nil {
		return nil
	}
	what := r.dev
	if r.cfg.PartScan {
		what += " and its partitions"
	}
	r.so.trace.tracef("settling: waiting until %s can be opened", what)
	parts, err := r.host.settle(r.ctx, r.index, r.cfg.PartScan)
	if err != nil {
		return fmt.Errorf("%s: %w", r.dev, err)
	}
	r.parts = parts
	r.so.trace.tracef("settled: %s is usable", what)
	return nil
}

// record writes the state record, removed at exit unless handed over, and
// from then on sends a daemon's log to the device's log file.
func (r *serverRun) record() error {
	cfg, so := r.cfg, r.so
	cfg.Index, cfg.ReadOnly = r.index, r.ro
	now := time.Now().UTC()
	st := &State{
		Config: cfg, PID: os.Getpid(), BackendID: r.backendID,
		Desc: r.opened.Desc, Format: r.opened.Format, Pin: r.opened.Pin, Size: r.src.Size(),
		ServerFlags: r.flags, Partitions: r.parts, Started: now, Attached: now,
		Supervisor: so.supervisor, PIDStart: refOf(os.Getpid()).Start,
	}
	if so.supervisor != 0 {
		st.SupervisorStart = refOf(so.supervisor).Start
	}
	if so.memFile != nil {
		st.MemFD = memFD
	}
	if res := so.resume; res != nil {
		st.Restarts, st.LastExit, st.Attached = res.Restarts, res.LastExit, res.Attached
	}
	dec := r.decodeLog(r.cfg.Source)
	st.Decoded = dec.current()
	dir := r.host.stateDir
	if err := writeState(dir, st); err != nil {
		return err
	}
	r.so.trace.tracef("wrote the state record %s", statePath(dir, r.index))
	r.st = st
	r.deferUndo(func() {
		if !r.handover {
			removeState(dir, r.index, os.Getpid())
		}
	})
	// The decode's later steps go into copies of the record, until the
	// record is removed or handed over.
	dec.recording(r.dev, func(d Decoded) error {
		rec := *st
		rec.Decoded = &d
		return writeState(dir, &rec)
	})
	r.deferUndo(dec.stop)
	// From here on a daemon logs to a file next to the state record,
	// including any panic.
	if r.daemon {
		redirectStderr(dir, deviceLogPath(dir, r.index))
	}
	return nil
}

// tellAttach reports the device to attach; if attach is gone, nobody
// knows of the device, so it is undone.
func (r *serverRun) tellAttach() error {
	r.res.State = r.st
	if err := r.report(r.res); err != nil {
		r.logger.Printf("%s: reporting to attach failed (%v); detaching", r.dev, err)
		r.disconnect()
		return err
	}
	return nil
}

// serveUntilEnd serves until the kernel disconnects (a detach), every
// connection is lost, a restart is requested (hand over to a new server)
// or ctx ends (SIGTERM: flush and disconnect), then flushes.
func (r *serverRun) serveUntilEnd() error {
	logger, dev, src := r.logger, r.dev, r.src
	for _, n := range r.notes {
		logger.Printf("%s: %s", dev, n)
	}
	if r.so.resume != nil {
		logger.Printf("%s: restarted (restart %d; the previous server %s)", dev, r.st.Restarts, r.st.LastExit)
	}
	logger.Printf("%s: serving %s (%d bytes, %d connections, flags %#x)", dev, r.opened.Desc, src.Size(), r.cfg.Connections, r.flags)
	r.deferUndo(startStats(r.host.stateDir, r.st, r.stack, logger.Printf))

	served := make(chan struct{})
	go func() { r.conns.Wait(); close(served) }()
	select {
	case <-served:
		if !r.srv.Disconnected() {
			// The kernel dropped the connections (a request timed out on
			// each of them) without a detach: a new server can take over.
			logger.Printf("%s: every connection has ended without a disconnect request", dev)
			src.Flush()
			r.handover = true
			return errConnectionsLost
		}
		logger.Printf("%s: every connection has ended", dev)
	case sig := <-r.so.restartRequested:
		end := errRestartRequested
		if sig == syscall.SIGWINCH {
			end = errResizeRequested
		}
		logger.Printf("%s: %v: flushing and handing over", dev, end)
		if err := src.Flush(); err != nil {
			logger.Printf("%s: flush: %v", dev, err)
		}
		r.stopServing()
		r.conns.Wait()
		r.handover = true
		return end
	case <-r.ctx.Done():
		logger.Printf("%s: signalled: flushing and disconnecting", dev)
		if err := src.Flush(); err != nil {
			logger.Printf("%s: flush: %v", dev, err)
		}
		if err := r.fam.Disconnect(r.index); err != nil {
			logger.Printf("%s: disconnect: %v", dev, err)
		}
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			logger.Printf("%s: connections did not end after disconnect; closing them", dev)
			r.stopServing()
			r.conns.Wait()
		}
	}
	if err := src.Flush(); err != nil {
		logger.Printf("%s: final flush: %v", dev, err)
		return err
	}
	return nil
}
