package attach

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/kernel"
	"github.com/nbdloop/nbdloop/nbd"
)

// Result is what the server process reports to `attach` once: the device,
// or the error that stopped it, and warnings to print either way.
type Result struct {
	Device   *Device  `json:"device,omitempty"`
	Error    string   `json:"error,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// Serve is the server process: it opens the source, starts serving the
// server ends of fresh socketpairs, hands the other ends to the kernel with
// NBD_CMD_CONNECT, waits until the device (and with PartScan its partitions)
// can be used, writes the state record and calls report exactly once. Then it
// serves until the kernel disconnects or ctx is cancelled (SIGTERM), in which
// case it flushes the source and disconnects the device itself.
//
// If report fails (the parent is gone), Serve undoes the attach: nobody
// would know about the device.
func Serve(ctx context.Context, cfg Config, daemon bool, report func(Result) error) error {
	return serve(ctx, cfg, daemon, serveOptions{}, report)
}

// serveOptions are what a supervised server gets from its supervisor.
type serveOptions struct {
	// resume, when set, re-attaches the device it names with RECONFIGURE
	// instead of attaching a new one with CONNECT.
	resume *resumeInfo
	// supervisor is the supervisor's pid, for the state record.
	supervisor int
	// memFile is the memfd of a memory: device.
	memFile *os.File
	// restartRequested asks the server to flush and exit without
	// disconnecting, so that the supervisor starts a new one.
	restartRequested <-chan os.Signal
}

// resumeInfo is what a restarted server needs to know about the device it
// takes over.
type resumeInfo struct {
	Index     int       `json:"index"`
	BackendID string    `json:"backend_id"`
	Size      int64     `json:"size"`
	Restarts  int       `json:"restarts"`  // including this one
	LastExit  string    `json:"last_exit"` // why the previous server ended
	Attached  time.Time `json:"attached"`  // when the device was first attached
	// Format is what the source was served as: a source that now
	// probes otherwise is not served (chooseFormat).
	Format string `json:"format,omitempty"`
}

// Exit statuses of a server process that the supervisor acts on.
const (
	exitDetached         = 0 // the device was detached: do not restart
	exitFailed           = 1 // the server could not start or serve
	exitConnectionsLost  = 3 // every connection ended without a DISC: restart
	exitRestartRequested = 4 // SIGUSR1 (nbdloop restart): restart
)

var (
	errConnectionsLost  = errors.New("every connection ended without a disconnect request")
	errRestartRequested = errors.New("restart requested")
)

func serve(ctx context.Context, cfg Config, daemon bool, so serveOptions, report func(Result) error) error {
	res := Result{}
	fail := func(err error) error {
		res.Error = err.Error()
		report(res)
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	spec, err := ParseSpec(cfg.Source)
	if err != nil {
		return fail(err)
	}
	notes := protect(spec.Kind != "memory")
	if err := checkFiles(cfg.Files); err != nil {
		return fail(err)
	}
	// Locks before the files are opened (a reader's), upgraded to a
	// writer's once the source is known to be writable; held until exit.
	var locks imageLocks
	if !cfg.NoLock {
		if locks, err = lockFiles(cfg.Files); err != nil {
			return fail(err)
		}
		defer locks.Close()
	}

	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	oo := OpenOptions{
		ReadOnly: cfg.sourceReadOnly(), BlockSize: cfg.BlockSize,
		Offset: cfg.Offset, SizeLimit: cfg.SizeLimit, DirectIO: cfg.DirectIO,
		CacheSize: cfg.CacheSize, Composite: cfg.compositeOptions(), MemFile: so.memFile,
		Format: cfg.Format, AllowPaths: cfg.AllowPaths, AllowDevices: cfg.AllowDevices,
		MetadataLimit: cfg.MetadataLimit, SpillLimit: cfg.SpillLimit, Logf: logger.Printf,
	}
	if so.resume != nil {
		oo.ExpectFormat = so.resume.Format
	}
	opened, err := OpenSource(spec, oo)
	if err != nil {
		return fail(err)
	}
	src := opened.Source
	res.Warnings = append(res.Warnings, opened.Warnings...)
	defer src.Close()
	if !src.Caps().ReadOnly && !cfg.ReadOnly {
		if err := locks.upgrade(); err != nil {
			return fail(err)
		}
	}
	if r := so.resume; r != nil && src.Size() != r.Size {
		return fail(fmt.Errorf("%s: the source now has %d bytes, not the device's %d: cannot restart the server (detach the device)", cfg.Source, src.Size(), r.Size))
	}
	stack, err := openFilters(src, cfg, so.resume != nil)
	if err != nil {
		return fail(err)
	}
	if len(cfg.Filters) > 0 {
		src = stack.Source
		defer src.Close()
	}

	fam, err := kernel.Open()
	if errors.Is(err, kernel.ErrNoDriver) {
		return fail(fmt.Errorf("%w (load the driver: modprobe nbd)", err))
	} else if err != nil {
		return fail(err)
	}

	caps := src.Caps()
	ro := caps.ReadOnly || cfg.ReadOnly
	srv := nbd.NewServer(src, nbd.Options{Logf: logger.Printf, Observe: observeFunc(stack)})
	flags := nbd.TransmissionFlags(caps, cfg.Connections > 1)
	if cfg.ReadOnly {
		flags |= nbd.FlagReadOnly
	}

	kernelEnds := make([]int, 0, cfg.Connections)
	closeKernelEnds := func() {
		for _, fd := range kernelEnds {
			unix.Close(fd)
		}
		kernelEnds = nil
	}
	defer closeKernelEnds()
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	var wg sync.WaitGroup
	for i := 0; i < cfg.Connections; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Errorf("creating socketpair: %w", err))
		}
		kernelEnds = append(kernelEnds, fds[0])
		for _, fd := range fds {
			growSendBuffer(fd)
		}
		f := os.NewFile(uintptr(fds[1]), fmt.Sprintf("nbd-conn-%d", i))
		conn, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("creating socketpair: %w", err))
		}
		// Serving starts before CONNECT: the kernel reads the partition
		// table as soon as the device exists.
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			srv.ServeConn(serveCtx, conn, i)
		}()
	}

	var index int
	var backendID string
	var parts []string
	if r := so.resume; r != nil {
		index, backendID = r.Index, r.BackendID
		err = fam.Reconfigure(kernel.ReconfigureRequest{Index: index, BackendID: backendID, Sockets: kernelEnds})
		closeKernelEnds()
		if err != nil {
			stopServing()
			wg.Wait()
			return fail(fmt.Errorf("/dev/nbd%d: handing new connections to the kernel (RECONFIGURE): %w", index, err))
		}
		parts, _ = kernel.Sysfs{}.Partitions(index)
	} else {
		backendID = newBackendID()
		index, err = fam.Connect(kernel.ConnectRequest{
			Index:           cfg.Index,
			Size:            uint64(src.Size()),
			BlockSize:       uint64(cfg.BlockSize),
			Timeout:         cfg.Timeout,
			DeadConnTimeout: cfg.DeadTimeout,
			ServerFlags:     flags,
			BackendID:       backendID,
			Sockets:         kernelEnds,
		})
		closeKernelEnds() // the kernel holds its own references now
		if err != nil {
			stopServing()
			wg.Wait()
			return fail(connectError(cfg.Index, err))
		}
	}
	dev := fmt.Sprintf("/dev/nbd%d", index)
	undo := func() {
		if so.resume == nil {
			fam.Disconnect(index)
		}
		stopServing()
		wg.Wait()
	}

	if so.resume == nil {
		parts, err = settle(ctx, index, cfg.PartScan)
		if err != nil {
			undo()
			return fail(fmt.Errorf("%s: %w", dev, err))
		}
	}

	st := &State{
		Device: dev, Index: index, PID: os.Getpid(), BackendID: backendID,
		Source: cfg.Source, Desc: opened.Desc, Format: opened.Format,
		Size: src.Size(), BlockSize: cfg.BlockSize, ReadOnly: ro,
		Connections: cfg.Connections, ServerFlags: flags,
		Timeout: cfg.Timeout, DeadTimeout: cfg.DeadTimeout, Config: cfg,
		Started: time.Now().UTC(), Attached: time.Now().UTC(), Supervisor: so.supervisor,
		PIDStart: refOf(os.Getpid()).Start,
	}
	if so.supervisor != 0 {
		st.SupervisorStart = refOf(so.supervisor).Start
	}
	if so.memFile != nil {
		st.MemFD = memFD
	}
	if r := so.resume; r != nil {
		st.Restarts, st.LastExit, st.Attached = r.Restarts, r.LastExit, r.Attached
	}
	dir := StateDir()
	if err := writeState(dir, st); err != nil {
		undo()
		return fail(err)
	}
	// A server that hands over to its successor leaves the record for it.
	handover := false
	defer func() {
		if !handover {
			removeState(dir, index, os.Getpid())
		}
	}()

	// From here on a daemon logs to a file next to the state record,
	// including any panic.
	if daemon {
		if lf, err := openDeviceLog(dir, index); err == nil {
			unix.Dup2(int(lf.Fd()), 2)
			lf.Close()
		}
	}

	res.Device = &Device{
		Name: dev, Index: index, Size: src.Size(), Source: opened.Desc, Format: opened.Format,
		RO: ro, PID: os.Getpid(), State: "running", Connections: cfg.Connections,
		BlockSize: cfg.BlockSize, Backend: backendID, Partitions: parts, Filters: cfg.Filters,
		Supervisor: so.supervisor, Restarts: st.Restarts, LastExit: st.LastExit,
	}
	if err := report(res); err != nil {
		logger.Printf("%s: reporting to attach failed (%v); detaching", dev, err)
		undo()
		return err
	}
	for _, n := range notes {
		logger.Printf("%s: %s", dev, n)
	}
	if so.resume != nil {
		logger.Printf("%s: restarted (restart %d; the previous server %s)", dev, st.Restarts, st.LastExit)
	}
	logger.Printf("%s: serving %s (%d bytes, %d connections, flags %#x)", dev, opened.Desc, src.Size(), cfg.Connections, flags)
	defer startStats(dir, st, stack, logger.Printf)()

	served := make(chan struct{})
	go func() { wg.Wait(); close(served) }()
	select {
	case <-served:
		if !srv.Disconnected() {
			// The kernel dropped the connections (a request timed out on
			// each of them) without a detach: a new server can take over.
			logger.Printf("%s: every connection has ended without a disconnect request", dev)
			src.Flush()
			handover = true
			return errConnectionsLost
		}
		logger.Printf("%s: every connection has ended", dev)
	case <-so.restartRequested:
		logger.Printf("%s: restart requested: flushing and handing over", dev)
		if err := src.Flush(); err != nil {
			logger.Printf("%s: flush: %v", dev, err)
		}
		stopServing()
		wg.Wait()
		handover = true
		return errRestartRequested
	case <-ctx.Done():
		logger.Printf("%s: signalled: flushing and disconnecting", dev)
		if err := src.Flush(); err != nil {
			logger.Printf("%s: flush: %v", dev, err)
		}
		if err := fam.Disconnect(index); err != nil {
			logger.Printf("%s: disconnect: %v", dev, err)
		}
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			logger.Printf("%s: connections did not end after disconnect; closing them", dev)
			stopServing()
			wg.Wait()
		}
	}
	if err := src.Flush(); err != nil {
		logger.Printf("%s: final flush: %v", dev, err)
		return err
	}
	return nil
}

func connectError(index int, err error) error {
	switch {
	case errors.Is(err, syscall.EBUSY) && index >= 0:
		return fmt.Errorf("/dev/nbd%d: device is in use (detach it first: nbdloop detach /dev/nbd%d, or omit --device)", index, index)
	case errors.Is(err, syscall.EPERM):
		return fmt.Errorf("attaching: permission denied (run as root)")
	case errors.Is(err, syscall.EINVAL) && index >= 0:
		return fmt.Errorf("/dev/nbd%d: the kernel refused the device (%v): it may be going down or the index is out of range", index, err)
	}
	return fmt.Errorf("attaching: %w", err)
}

// newBackendID returns the NBD_ATTR_BACKEND_IDENTIFIER: "nbdloop:" plus 16
// random hex digits. The prefix is how `list` tells nbdloop's devices from
// foreign ones, and the random part lets a restarted server prove, through
// RECONFIGURE, that it is re-attaching its own device.
func newBackendID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "nbdloop:" + hex.EncodeToString(b)
}

// settle waits until /dev/nbdN exists and opens it once, which is what makes
// the kernel scan the partition table (udev does that open on a normal
// system; nbdloop does not rely on udev). With partScan it also forces a
// re-read with BLKRRPART and waits for every partition's device node.
func settle(ctx context.Context, index int, partScan bool) ([]string, error) {
	dev := fmt.Sprintf("/dev/nbd%d", index)
	tuneQueue(index)
	if err := waitFor(ctx, 10*time.Second, func() bool { _, err := os.Stat(dev); return err == nil }); err != nil {
		return nil, fmt.Errorf("device node did not appear: %w", err)
	}
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the device: %w", err)
	}
	if partScan {
		err = unix.IoctlSetInt(fd, unix.BLKRRPART, 0)
		if err != nil && !errors.Is(err, syscall.EINVAL) {
			unix.Close(fd)
			return nil, fmt.Errorf("re-reading the partition table: %w", err)
		}
	}
	unix.Close(fd)
	if !partScan {
		return nil, nil
	}
	parts, err := kernel.Sysfs{}.Partitions(index)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		node := "/dev/" + p
		if err := waitFor(ctx, 10*time.Second, func() bool { _, err := os.Stat(node); return err == nil }); err != nil {
			return nil, fmt.Errorf("partition node %s did not appear: %w", node, err)
		}
	}
	return parts, nil
}

// waitFor polls cond until it holds, ctx ends or timeout passes. Polling is
// enough here: device nodes and sysfs entries have no portable notification
// without udev.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
	return nil
}

// tuneQueue sets the request queue up the way loop devices have it. nbd
// devices start with the mq-deadline scheduler and 128 KiB requests; in
// make bench's profiles of 1 MiB sequential I/O the kblockd workers that
// split and schedule requests took a quarter of the CPU. The server is a
// process on the same host, so reordering buys nothing ("none"), and larger
// requests (1 MiB) halve the round trips. Failures are harmless: the device
// works either way.
func tuneQueue(index int) {
	q := fmt.Sprintf("/sys/block/nbd%d/queue/", index)
	os.WriteFile(q+"scheduler", []byte("none"), 0)
	os.WriteFile(q+"max_sectors_kb", []byte("1024"), 0)
}

// socketBuffer is the send buffer of both ends of each connection. The
// default (net.core.wmem_default, 208 KiB) makes a 1 MiB request or reply
// stop five times on the way for the other side to drain it, each stop a
// sleep and a wake-up of the sender; with room for several such messages the
// sender writes a request in one go. In the VM (qemu TCG), 1 MiB sequential
// writes at QD8 into a new qcow2 image went from 54-61 to 74-79 MB/s, and to
// a memory disk from about 132 to 160 MB/s.
const socketBuffer = 4 << 20

// growSendBuffer raises fd's send buffer to socketBuffer, past
// net.core.wmem_max where the process may (CAP_NET_ADMIN, which attach has
// as root). A smaller buffer only costs speed, so failures are ignored.
func growSendBuffer(fd int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	}
}
