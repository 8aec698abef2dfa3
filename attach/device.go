package attach

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/kernel"
)

// This file: what serve needs of the kernel's device besides netlink: the
// errors of CONNECT, the backend identifier, waiting for the device and its
// partitions, queue settings and socket buffers.

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
// sender writes a request in one go (figures: docs/performance.md, section
// attach).
const socketBuffer = 4 << 20

// growSendBuffer raises fd's send buffer to socketBuffer, past
// net.core.wmem_max where the process may (CAP_NET_ADMIN, which attach has
// as root). A smaller buffer only costs speed, so failures are ignored.
func growSendBuffer(fd int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	}
}
