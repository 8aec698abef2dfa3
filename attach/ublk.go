package attach

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/ublk"
)

// ublkRun is a server process serving its source through the ublk driver
// (--driver ublk): the NBD server's checks and source (serve.go's steps
// check and openSource), then a ublk device instead of socketpairs and
// CONNECT. A supervised server adds the device with user recovery, so
// that the next server (ublk_supervise.go) takes it over (Recover) if it
// dies; without a supervisor (--no-restart, --foreground) a dead server's
// device fails its I/O and waits for a detach.
type ublkRun struct {
	*serverRun
	ctrl *ublk.Control
	dev  *ublk.Device
}

func serveUblk(ctx context.Context, h host, cfg Config, daemon bool, so serveOptions, report func(Result) error) error {
	r := &ublkRun{serverRun: &serverRun{ctx: ctx, host: h, cfg: cfg, daemon: daemon, so: so, report: report,
		logger: log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)}}
	defer r.cleanUp()
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

// add creates and starts the ublk device, or takes over the device of a
// dead server (so.resume); it is removed at exit unless handed over.
func (r *ublkRun) add() error {
	r.ro = r.src.Caps().ReadOnly || r.cfg.ReadOnly
	o := ublk.Options{BlockSize: int(r.cfg.BlockSize), ReadOnly: r.ro, Recovery: r.so.supervisor != 0,
		Observe: r.stack.ObserveFunc(), Logf: r.logger.Printf}
	var dev *ublk.Device
	var err error
	if res := r.so.resume; res != nil {
		r.so.trace.tracef("START_USER_RECOVERY, END_USER_RECOVERY: %s", res.Name())
		dev, err = ublk.Recover(r.ctrl, res.Config.Index, r.src, o)
		r.backendID = res.BackendID
	} else {
		r.so.trace.tracef("ADD_DEV, SET_PARAMS, START_DEV: %d bytes, %d-byte blocks", r.src.Size(), r.cfg.BlockSize)
		o.Fixed, o.ID = r.cfg.Index >= 0, r.cfg.Index
		dev, err = ublk.Add(r.ctrl, r.src, o)
		r.backendID = newBackendID()
		if o.Fixed && errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("/dev/ublkb%d: the device exists already (pick another --device, or leave --device out for the first free one)", o.ID)
		}
	}
	if err != nil {
		return err
	}
	r.dev, r.index, r.serverRun.dev = dev, dev.ID, dev.Name()
	r.deferUndo(func() {
		if r.handover {
			dev.Abandon()
		} else if err := dev.Stop(); err != nil {
			r.logger.Printf("%s: %v", dev.Name(), err)
		}
	})
	r.so.trace.tracef("serving %s", dev.Name())
	return nil
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
		Supervisor: r.so.supervisor,
	}
	if r.so.supervisor != 0 {
		st.SupervisorStart = refOf(r.so.supervisor).Start
	}
	if r.so.memFile != nil {
		st.MemFD = memFD
	}
	if res := r.so.resume; res != nil {
		st.Restarts, st.LastExit, st.Attached = res.Restarts, res.LastExit, res.Attached
	}
	dir := r.host.stateDir
	path := ublkStatePath(dir, r.index)
	if err := writeRecord(dir, path, st); err != nil {
		return err
	}
	r.st = st
	r.deferUndo(func() {
		if !r.handover {
			removeUblkState(dir, r.index, os.Getpid())
		}
	})
	if r.daemon {
		redirectStderr(dir, ublkLogPath(dir, r.index))
	}
	return nil
}

// serveUblkUntilEnd serves until ctx ends (SIGTERM, from detach: flush and
// remove the device), a restart is requested (flush and hand the device
// over to the next server) or the kernel ends the queues (someone else
// removed the device), then flushes.
func (r *ublkRun) serveUblkUntilEnd() error {
	logger, dev, src := r.logger, r.dev.Name(), r.src
	for _, n := range r.notes {
		logger.Printf("%s: %s", dev, n)
	}
	if r.so.resume != nil {
		logger.Printf("%s: restarted (restart %d; the previous server %s)", dev, r.st.Restarts, r.st.LastExit)
	}
	logger.Printf("%s: serving %s (%d bytes, ublk)", dev, r.opened.Desc, src.Size())
	r.deferUndo(startStats(r.host.stateDir, r.st, r.stack, logger.Printf))
	select {
	case <-r.dev.Done():
		logger.Printf("%s: the kernel ended every queue", dev)
	case <-r.so.restartRequested:
		logger.Printf("%s: %v: flushing and handing over", dev, errRestartRequested)
		if err := src.Flush(); err != nil {
			logger.Printf("%s: flush: %v", dev, err)
		}
		r.handover = true
		r.dev.Abandon()
		return errRestartRequested
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
