package attach

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/ublk"
)

// Restart starts a new server for /dev/nbdN, which must be attached by
// nbdloop, and waits until it serves. With a live supervisor it asks the
// supervisor (SIGHUP: try again after giving up) or the server (SIGUSR1:
// flush and hand over); without one it starts a new supervisor that takes
// the device over with RECONFIGURE. A memory: device whose server and
// supervisor are both gone has lost its contents: Restart refuses it unless
// force.
func Restart(ctx context.Context, index int, force bool) (*Device, error) {
	return realHost().restart(ctx, index, force)
}

func (h host) restart(ctx context.Context, index int, force bool) (*Device, error) {
	dev := fmt.Sprintf("/dev/nbd%d", index)
	sys := h.sys
	if _, bound, err := sys.PID(index); err != nil || !bound {
		return nil, fmt.Errorf("%s: not attached (nothing to restart; attach it)", dev)
	}
	dir := h.stateDir
	st := readState(dir, index)
	backend, _ := sys.Backend(index)
	if st == nil || st.BackendID != backend {
		return nil, fmt.Errorf("%s: not attached by nbdloop, or its state record is gone (detach it and attach again)", dev)
	}
	if why := notRestartable(st.Config, st.Format); why != "" {
		return nil, fmt.Errorf("%s: cannot restart: %s (detach it)", dev, why)
	}
	return restartRecord(ctx, dev, st, force, func() *State { return readState(dir, index) }, func() (*Device, error) {
		devs, err := h.list([]int{index})
		if err != nil || len(devs) != 1 {
			return nil, fmt.Errorf("%s: restarted, but listing it failed: %v", dev, err)
		}
		return &devs[0], nil
	})
}

// RestartUblk is Restart for /dev/ublkb<id>, attached by nbdloop with a
// supervisor: the new server takes the device over with ublk's user
// recovery, as the supervisor's own restarts do.
func RestartUblk(ctx context.Context, id int, force bool) (*Device, error) {
	h := realHost()
	dev, dir := ublk.BlockPath(id), h.stateDir
	st := readUblkState(dir, id)
	if st == nil {
		return nil, fmt.Errorf("%s: not attached by nbdloop, or its state record is gone (detach it and attach again)", dev)
	}
	ctrl, err := openUblkControl()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	}
	exists := ctrl.Exists(id)
	ctrl.Close()
	if !exists {
		return nil, fmt.Errorf("%s: not attached (nothing to restart; attach it)", dev)
	}
	if st.Supervisor == 0 {
		return nil, fmt.Errorf("%s: cannot restart: attached without a supervisor (--no-restart or --foreground), so without ublk's user recovery (detach it)", dev)
	}
	if why := notRestartable(st.Config, st.Format); why != "" {
		return nil, fmt.Errorf("%s: cannot restart: %s (detach it)", dev, why)
	}
	return restartRecord(ctx, dev, st, force, func() *State { return readUblkState(dir, id) }, func() (*Device, error) {
		for _, d := range h.listUblk() {
			if d.Index == id {
				return &d, nil
			}
		}
		return nil, fmt.Errorf("%s: restarted, but list does not show it", dev)
	})
}

// restartRecord restarts the server of dev, whose record is st: through
// its live supervisor, or a new one; then waits until read shows a new
// live server, and returns the device as list shows it.
func restartRecord(ctx context.Context, dev string, st *State, force bool, read func() *State, listed func() (*Device, error)) (*Device, error) {
	oldPID := st.PID
	supAlive, srvAlive := st.supervisor().alive(), st.server().alive()
	switch {
	case supAlive && srvAlive:
		if err := st.server().signal(syscall.SIGUSR1); err != nil {
			return nil, fmt.Errorf("%s: asking server %d to hand over: %w", dev, st.PID, err)
		}
	case supAlive:
		if err := st.supervisor().signal(syscall.SIGHUP); err != nil {
			return nil, fmt.Errorf("%s: asking supervisor %d to try again: %w", dev, st.Supervisor, err)
		}
	default:
		if err := takeOver(ctx, st, srvAlive, force); err != nil {
			return nil, fmt.Errorf("%s: %w", dev, err)
		}
	}
	var cur *State
	err := waitFor(ctx, 30*time.Second, func() bool {
		cur = read()
		return cur != nil && cur.PID != oldPID && cur.server().alive() && cur.DeadReason == ""
	})
	if err != nil {
		why := ""
		if cur != nil && cur.DeadReason != "" {
			why = ": " + cur.DeadReason
		}
		return nil, fmt.Errorf("%s: no new server is serving the device (%v)%s", dev, err, why)
	}
	return listed()
}

// takeOver starts a new supervisor for the device of st, whose supervisor
// is gone. A live server is asked to hand over first; a RAM disk's memfd is
// taken from it before.
func takeOver(ctx context.Context, st *State, srvAlive, force bool) error {
	cfg := st.Config
	cfg.NoRestart = false
	c := child{command: SuperviseCommand, cfg: cfg, takeover: st.takeover(st.Restarts+1, "restarted by hand (nbdloop restart)")}
	if spec, err := ParseSpec(st.Config.Source); err == nil && spec.Kind == KindMemory {
		var mem *os.File
		if srvAlive && st.MemFD > 0 {
			mem, err = stealFD(st.server(), st.MemFD)
			if err != nil {
				return fmt.Errorf("taking the RAM disk from server %d: %w", st.PID, err)
			}
			defer mem.Close()
		} else if !force {
			return fmt.Errorf("the RAM disk's contents died with its server and supervisor (detach it; or restart --force to serve it empty)")
		}
		c.memFile = mem
	}
	if srvAlive {
		// Without a supervisor the server does not handle SIGUSR1 and the
		// signal ends it; either way the kernel keeps what it wrote.
		st.server().signal(syscall.SIGUSR1)
		if err := waitFor(ctx, 30*time.Second, func() bool { return !st.server().alive() }); err != nil {
			return fmt.Errorf("server %d did not hand over: %w", st.PID, err)
		}
	}
	_, _, err := spawn(ctx, c)
	return err
}

// stealFD duplicates descriptor fd of process p into this process
// (pidfd_getfd, Linux 5.6; root may do it to any process), never of a
// process that reused p's pid.
func stealFD(p procRef, fd int) (*os.File, error) {
	pfd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pfd)
	if p.Start != 0 {
		if start, ok := procStart(p.PID); !ok || start != p.Start {
			return nil, errProcessGone
		}
	}
	nfd, err := unix.PidfdGetfd(pfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd: %w", err)
	}
	unix.CloseOnExec(nfd)
	return os.NewFile(uintptr(nfd), "memfd"), nil
}
