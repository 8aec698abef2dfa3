package attach

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/kernel"
)

// host is what the device lifecycle (serve, list, detach, restart) needs
// from the machine: the driver (netlink) and its view in sysfs, device
// nodes becoming usable, mount points, exclusive opens and partition
// rescans, the process protections and the state directory. The real one
// is realHost; tests give a fake sysfs tree and fake calls, and run the
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
	// hold opens device index and returns the function that closes it.
	hold func(index int) (release func(), err error)
	// openDriver opens the driver's netlink family for a server.
	openDriver func() (driver, error)
	// settle waits until a new device (and with partScan its partition
	// nodes) can be used, and returns its partitions.
	settle func(ctx context.Context, index int, partScan bool) ([]string, error)
	// protect applies a server's process protections (mlockall with
	// lock) and returns notes for its log.
	protect func(lock bool) []string
}

// driver is what a server needs from the NBD driver (kernel.Family).
type driver interface {
	Connect(kernel.ConnectRequest) (int, error)
	Reconfigure(kernel.ReconfigureRequest) error
	Disconnect(index int) error
}

// openDriver opens the real driver's family, saying how to load it when it
// is missing.
func openDriver() (driver, error) {
	fam, err := kernel.Open()
	if errors.Is(err, kernel.ErrNoDriver) {
		return nil, fmt.Errorf("%w (load the driver: modprobe nbd)", err)
	} else if err != nil {
		return nil, err
	}
	return fam, nil
}

// realHost is the machine itself.
func realHost() host {
	return host{
		sys:        kernel.Sysfs{},
		stateDir:   StateDir(),
		openDriver: openDriver,
		settle:     settle,
		protect:    protect,
		disconnect: func(index int) error {
			fam, err := openDriver()
			if err != nil {
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
		hold: func(index int) (func(), error) {
			fd, err := unix.Open(fmt.Sprintf("/dev/nbd%d", index), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err != nil {
				return nil, fmt.Errorf("opening /dev/nbd%d: %w", index, err)
			}
			return func() { unix.Close(fd) }, nil
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
