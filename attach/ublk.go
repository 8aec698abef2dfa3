package attach

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/nbdloop/nbdloop/ublk"
)

// ublkRun is a server process serving its source through the ublk driver
// (--driver ublk): the NBD server's checks and source (serve.go's steps
// check and openSource), then a ublk device instead of socketpairs and
// CONNECT. There is no supervisor and no restart yet: a server that dies
// leaves the device to be detached.
type ublkRun struct {
	*serverRun
	ctrl *ublk.Control
	dev  *ublk.Device
}

func serveUblk(ctx context.Context, h host, cfg Config, daemon bool, so serveOptions, report func(Result) error) error {
	r := &ublkRun{serverRun: &serverRun{ctx: ctx, host: h, cfg: cfg, daemon: daemon, so: so, report: report,
		logger: log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)}}
	defer r.cleanUp()
	if so.resume != nil {
		return r.fail(fmt.Errorf("%s: ublk devices are not restarted yet (detach it and attach again)", ublk.BlockPath(so.resume.Config.Index)))
	}
	for _, step := range []func() error{r.check, r.openControl, r.openSource, r.add, r.recordUblk} {
		if err := step(); err != nil {
			return r.fail(err)
		}
	}
	r.res.State = r.st
	if err := r.report(r.res); err != nil {
		r.logger.Printf("%s: reporting to attach failed (%v); detaching", r.dev.Name(), err)
		return err
	}
	return r.serveUblkUntilEnd()
}

// openControl opens /dev/ublk-control: a kernel without ublk fails here,
// before any work on the source.
func (r *ublkRun) openControl() error {
	r.so.trace.tracef("opening the ublk driver (%s)", ublk.ControlPath)
	ctrl, err := openUblkControl()
	if err != nil {
		return err
	}
	r.ctrl = ctrl
	r.deferUndo(func() { ctrl.Close() })
	return nil
}

// add creates and starts the ublk device; it is removed at exit.
func (r *ublkRun) add() error {
	r.ro = r.src.Caps().ReadOnly || r.cfg.ReadOnly
	r.so.trace.tracef("ADD_DEV, SET_PARAMS, START_DEV: %d bytes, %d-byte blocks", r.src.Size(), r.cfg.BlockSize)
	dev, err := ublk.Add(r.ctrl, r.src, ublk.Options{BlockSize: int(r.cfg.BlockSize), ReadOnly: r.ro, Logf: r.logger.Printf})
	if err != nil {
		return err
	}
	r.ublkDevice(dev)
	return nil
}

func (r *ublkRun) ublkDevice(dev *ublk.Device) {
	r.dev, r.index, r.backendID = dev, dev.ID, newBackendID()
	r.serverRun.dev = dev.Name()
	r.deferUndo(func() {
		if err := dev.Stop(); err != nil {
			r.logger.Printf("%s: %v", dev.Name(), err)
		}
	})
	r.so.trace.tracef("started %s", dev.Name())
}

// recordUblk writes the state record (ublkbN.json), removed at exit, and
// from then on sends a daemon's log to ublkbN.log.
func (r *ublkRun) recordUblk() error {
	cfg := r.cfg
	cfg.Index, cfg.ReadOnly, cfg.Driver = r.index, r.ro, DriverUblk
	now := time.Now().UTC()
	st := &State{
		Config: cfg, PID: os.Getpid(), BackendID: r.backendID,
		Desc: r.opened.Desc, Format: r.opened.Format, Pin: r.opened.Pin, Size: r.src.Size(),
		Started: now, Attached: now, PIDStart: refOf(os.Getpid()).Start,
	}
	if r.so.memFile != nil {
		st.MemFD = memFD
	}
	dir := r.host.stateDir
	path := ublkStatePath(dir, r.index)
	if err := writeRecord(dir, path, st); err != nil {
		return err
	}
	r.st = st
	r.deferUndo(func() { removeUblkState(dir, r.index, os.Getpid()) })
	if r.daemon {
		redirectStderr(dir, filepath.Join(dir, fmt.Sprintf("ublkb%d.log", r.index)))
	}
	return nil
}

// serveUblkUntilEnd serves until ctx ends (SIGTERM, from detach: flush and
// remove the device) or the kernel ends the queues (someone else removed
// the device), then flushes.
func (r *ublkRun) serveUblkUntilEnd() error {
	logger, dev, src := r.logger, r.dev.Name(), r.src
	for _, n := range r.notes {
		logger.Printf("%s: %s", dev, n)
	}
	logger.Printf("%s: serving %s (%d bytes, ublk)", dev, r.opened.Desc, src.Size())
	select {
	case <-r.dev.Done():
		logger.Printf("%s: the kernel ended every queue", dev)
	case <-r.ctx.Done():
		logger.Printf("%s: signalled: flushing and removing the device", dev)
		if err := src.Flush(); err != nil {
			logger.Printf("%s: flush: %v", dev, err)
		}
		if err := r.dev.Stop(); err != nil {
			logger.Printf("%s: %v", dev, err)
		}
	}
	if err := src.Flush(); err != nil {
		logger.Printf("%s: final flush: %v", dev, err)
		return err
	}
	return nil
}
