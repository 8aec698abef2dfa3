package attach

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/kernel"
)

// host is what the device lifecycle (list, detach, restart) needs from the
// machine: the driver's view in sysfs, netlink DISCONNECT, mount points,
// exclusive opens and partition rescans, and the state directory. The real
// one is realHost; tests give a fake sysfs tree and fake calls, and run the
// lifecycle without root or the driver.
type host struct {
	sys      kernel.Sysfs
	stateDir string
	// disconnect asks the driver to disconnect device index (NBD_CMD_
	// DISCONNECT): the server sees its sockets close and exits.
	disconnect func(index int) error
	// mountsOf returns the mount points of the block device major:minor,
	// named dev.
	mountsOf func(major, minor uint32, dev string) []string
	// busy reports whether someone has dev open exclusively (a mount,
	// swap, md, device-mapper).
	busy func(dev string) bool
	// rescan drops the partition nodes of a disconnected device.
	rescan func(index int)
}

// realHost is the machine itself.
func realHost() host {
	return host{
		sys:      kernel.Sysfs{},
		stateDir: StateDir(),
		disconnect: func(index int) error {
			fam, err := kernel.Open()
			if errors.Is(err, kernel.ErrNoDriver) {
				return fmt.Errorf("%w (load the driver: modprobe nbd)", err)
			} else if err != nil {
				return err
			}
			if err := fam.Disconnect(index); err != nil {
				return fmt.Errorf("/dev/nbd%d: disconnecting: %w", index, err)
			}
			return nil
		},
		mountsOf: func(major, minor uint32, dev string) []string {
			m, _ := kernel.MountPointsOf("", major, minor, dev)
			return m
		},
		busy: func(dev string) bool {
			fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err == nil {
				unix.Close(fd)
			}
			return errors.Is(err, syscall.EBUSY)
		},
		rescan: func(index int) {
			fd, err := unix.Open(fmt.Sprintf("/dev/nbd%d", index), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err != nil {
				return
			}
			unix.IoctlSetInt(fd, unix.BLKRRPART, 0)
			unix.Close(fd)
		},
	}
}

// exists reports whether /sys/block/nbdN exists.
func (h host) exists(index int) bool {
	all, err := h.sys.Devices()
	if err != nil {
		return false
	}
	for _, i := range all {
		if i == index {
			return true
		}
	}
	return false
}

// mounts returns the mount points of the device and of its partitions.
func (h host) mounts(index int) []string {
	names := []string{fmt.Sprintf("nbd%d", index)}
	parts, _ := h.sys.Partitions(index)
	var out []string
	for _, name := range append(names, parts...) {
		major, minor, err := h.sys.DevNum(name)
		if err != nil {
			continue
		}
		out = append(out, h.mountsOf(major, minor, "/dev/"+name)...)
	}
	return out
}
