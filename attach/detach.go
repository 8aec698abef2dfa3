package attach

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ParseDevice accepts /dev/nbdN, nbdN or N and returns N.
func ParseDevice(s string) (int, error) {
	t, dev := strings.CutPrefix(s, "/dev/")
	t, nbd := strings.CutPrefix(t, "nbd")
	n, err := strconv.Atoi(t)
	if err != nil || n < 0 || strconv.Itoa(n) != t || (dev && !nbd) {
		return 0, fmt.Errorf("%s: not an nbd device (use /dev/nbdN)", s)
	}
	return n, nil
}

// ErrNotAttached is wrapped by Detach for a device that has no server.
var ErrNotAttached = errors.New("not attached")

// InUseError is returned by Detach for a device that is mounted or held
// (by device-mapper, md, ...), unless forced.
type InUseError struct {
	Device  string
	Mounts  []string // mount points
	Holders []string // holders/ entries
	// Exclusive names the device or partition that someone has open
	// exclusively (swap, md, a mount in another namespace, ...) when
	// neither mounts nor holders explain it.
	Exclusive string
}

func (e *InUseError) Error() string {
	if len(e.Mounts) > 0 {
		return fmt.Sprintf("%s: device is mounted on %s (unmount it first: umount %s, or use --force)", e.Device, strings.Join(e.Mounts, ", "), e.Mounts[0])
	}
	if len(e.Holders) > 0 {
		return fmt.Sprintf("%s: device is held by %s (stop using it first, or use --force)", e.Device, strings.Join(e.Holders, ", "))
	}
	return fmt.Sprintf("%s: %s is in use: opened exclusively, e.g. as swap or by a mount in another namespace (stop using it first, or use --force)", e.Device, e.Exclusive)
}

// Detach disconnects /dev/nbdN and waits until its server process has
// flushed and exited and the device is free again. It works whether the
// server is alive or dead, and on foreign devices too (nbd-client, qemu-nbd).
// Without force, a device that is mounted or held, directly or through a
// partition, is refused: disconnecting fails the I/O in flight.
func Detach(ctx context.Context, index int, force bool) error {
	h := realHost()
	err := h.detach(ctx, index, force)
	if err == nil {
		os.Remove(statsPath(h.stateDir, index))
	}
	return err
}

// detach is Detach without removing the statistics file, which DetachStats
// reads afterwards.
func (h host) detach(ctx context.Context, index int, force bool) error {
	dev := fmt.Sprintf("/dev/nbd%d", index)
	sys := h.sys
	if !h.exists(index) {
		return fmt.Errorf("%s: no such nbd device", dev)
	}
	pid, attached, err := sys.PID(index)
	if err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	dir := h.stateDir
	if !attached {
		// A stale record from a server that died after the kernel let go.
		removeState(dir, index, 0)
		return fmt.Errorf("%s: %w", dev, ErrNotAttached)
	}
	if !force {
		if err := h.inUse(index); err != nil {
			return err
		}
	}
	st := readState(dir, index)
	if st != nil {
		// No restarts from here on: the server about to exit is detached.
		st.supervisor().signal(syscall.SIGUSR2)
	}
	if err := h.disconnect(index); err != nil {
		return err
	}
	// The server flushes and exits when the kernel closes its sockets.
	server := procRef{PID: pid}
	if st != nil {
		server = st.server()
	}
	if err := waitFor(ctx, 60*time.Second, func() bool { return !server.alive() }); err != nil {
		return fmt.Errorf("%s: server process %d did not exit: %w", dev, server.PID, err)
	}
	if st != nil && st.Supervisor != 0 {
		if err := waitFor(ctx, 10*time.Second, func() bool { return !st.supervisor().alive() }); err != nil {
			return fmt.Errorf("%s: supervisor process %d did not exit: %w", dev, st.Supervisor, err)
		}
	}
	// The kernel removes the pid file at the last close of the device. A
	// forced detach of a mounted device cannot wait for that: the mount
	// keeps it open until it is unmounted.
	wait := 30 * time.Second
	if force {
		wait = 2 * time.Second
	}
	if err := waitFor(ctx, wait, func() bool { _, ok, _ := sys.PID(index); return !ok }); err != nil && !force {
		return fmt.Errorf("%s: device still busy after disconnect (something keeps it open): %w", dev, err)
	}
	removeState(dir, index, 0)
	h.clearPartitions(index)
	return nil
}

// inUse reports mounts and holders of the device and of its partitions.
func (h host) inUse(index int) error {
	e := &InUseError{Device: fmt.Sprintf("/dev/nbd%d", index), Mounts: h.mounts(index)}
	e.Holders, _ = h.sys.Holders(index)
	if len(e.Mounts) > 0 || len(e.Holders) > 0 {
		return e
	}
	// An exclusive open fails with EBUSY while anything else has the device
	// (or one of its partitions) open exclusively: every mount, swapon, md
	// and device-mapper does. It catches what mountinfo cannot show.
	names := []string{fmt.Sprintf("nbd%d", index)}
	parts, _ := h.sys.Partitions(index)
	for _, name := range append(names, parts...) {
		if h.busy("/dev/" + name) {
			e.Exclusive = "/dev/" + name
			return e
		}
	}
	return nil
}

// clearPartitions drops the partition nodes the kernel keeps after a
// disconnect until the next open: without this a later attach to the same
// index could briefly show the previous disk's partitions.
func (h host) clearPartitions(index int) {
	if parts, _ := h.sys.Partitions(index); len(parts) > 0 {
		h.rescan(index)
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state is the field after the parenthesised command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}
