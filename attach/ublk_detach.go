package attach

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/ublk"
)

// DetachUblk removes ublk device /dev/ublkb<id> and waits until its server
// (and supervisor) has flushed and exited. The server does the removal (STOP_DEV, DEL_DEV)
// when signalled; for a device whose server is gone, DetachUblk sends
// those commands itself. Without force, a device that is mounted or held
// is refused.
func DetachUblk(ctx context.Context, id int, force bool) error {
	return detachUblk(ctx, id, force, nil)
}

// detachUblk is DetachUblk; beforeRemove, when not nil, is called once the
// server has exited, before the device's statistics file is removed.
func detachUblk(ctx context.Context, id int, force bool, beforeRemove func()) error {
	h := realHost()
	dev := ublk.BlockPath(id)
	name := fmt.Sprintf("ublkb%d", id)
	st := readUblkState(h.stateDir, id)
	major, minor, err := h.sys.DevNum(name)
	exists := err == nil
	if !exists && st == nil {
		return fmt.Errorf("%s: no such ublk device", dev)
	}
	if exists && !force {
		e := &InUseError{Device: dev, Mounts: h.mountsOf(major, minor, dev)}
		if len(e.Mounts) == 0 && h.busy(dev) {
			e.Exclusive = dev
		}
		if len(e.Mounts) > 0 || e.Exclusive != "" {
			return e
		}
	}
	if st != nil {
		// No restarts from here on: the server about to exit is detached.
		st.supervisor().signal(syscall.SIGUSR2)
	}
	if st != nil && st.server().alive() {
		// The server flushes, removes the device and exits on SIGTERM.
		server := st.server()
		if err := server.signal(syscall.SIGTERM); err != nil && err != errProcessGone {
			return fmt.Errorf("%s: signalling server process %d: %w", dev, server.PID, err)
		}
		if err := waitFor(ctx, 60*time.Second, func() bool { return !server.alive() }); err != nil {
			return fmt.Errorf("%s: server process %d did not exit: %w", dev, server.PID, err)
		}
	}
	if st != nil && st.Supervisor != 0 {
		if err := waitFor(ctx, 10*time.Second, func() bool { return !st.supervisor().alive() }); err != nil {
			return fmt.Errorf("%s: supervisor process %d did not exit: %w", dev, st.Supervisor, err)
		}
	}
	// A dead server leaves the device (or its number) to us; after a
	// server's own removal these find nothing to do.
	if ctrl, err := openUblkControl(); err == nil {
		if ctrl.Exists(id) {
			ctrl.StopDev(id)
			if err := ctrl.DelDev(id); err != nil {
				ctrl.Close()
				return err
			}
		}
		ctrl.Close()
	}
	removeUblkState(h.stateDir, id, 0)
	if beforeRemove != nil {
		beforeRemove()
	}
	os.Remove(ublkStatsPath(h.stateDir, id))
	return nil
}
