package ublk

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/uring"
)

// ControlPath is the driver's control device.
const ControlPath = "/dev/ublk-control"

// ErrNoDriver is returned when the kernel has no ublk driver (or it is not
// loaded): /dev/ublk-control is missing.
var ErrNoDriver = errors.New("this kernel has no ublk driver (" + ControlPath + " is missing)")

// Control sends control commands to /dev/ublk-control through a ring of
// its own. Its methods are safe for concurrent use; each waits for its
// command's answer.
type Control struct {
	mu   sync.Mutex
	fd   int
	ring *uring.Ring
}

// OpenControl opens the control device.
func OpenControl() (*Control, error) {
	fd, err := unix.Open(ControlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENXIO) {
		return nil, ErrNoDriver
	} else if err != nil {
		return nil, fmt.Errorf("opening %s: %w", ControlPath, err)
	}
	ring, err := uring.New(4, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ublk control: %w", err)
	}
	return &Control{fd: fd, ring: ring}, nil
}

// Close closes the control device.
func (c *Control) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ring == nil {
		return nil
	}
	c.ring.Close()
	c.ring = nil
	return unix.Close(c.fd)
}

// maxControlWaits bounds how many more times send waits for a command's
// completion when io_uring_enter returns without it.
const maxControlWaits = 100

// send sends command nr with header cmd and waits for its result; buf,
// when not nil, is the memory cmd.addr points at, kept alive meanwhile.
func (c *Control) send(nr uint32, cmd ctrlCmd, buf unsafe.Pointer) (int32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ring == nil {
		return 0, errors.New("ublk control: closed")
	}
	e := c.ring.GetSQE()
	e.Opcode, e.Fd, e.Off = uring.OpURingCmd, int32(c.fd), uint64(ctrlOp(nr))
	cmd.encode(e.Cmd[:])
	if _, err := c.ring.Submit(1); err != nil {
		return 0, err
	}
	// io_uring_enter may return before the completion it was asked to
	// wait for (task work run, a signal): wait again, a bounded number
	// of times.
	cqe := c.ring.PeekCQE()
	for tries := 0; cqe == nil && tries < maxControlWaits; tries++ {
		if _, err := c.ring.Submit(1); err != nil {
			return 0, err
		}
		cqe = c.ring.PeekCQE()
	}
	runtime.KeepAlive(buf)
	if cqe == nil {
		return 0, errors.New("ublk control: no completion")
	}
	res := cqe.Res
	c.ring.Seen()
	if res < 0 {
		return res, syscall.Errno(-res)
	}
	return res, nil
}

// addDev sends ADD_DEV for info (devID devIDAny for any free number) and
// returns what the kernel made of it (the device number, the flags).
func (c *Control) addDev(info devInfo) (devInfo, error) {
	p := unsafe.Pointer(&info)
	_, err := c.send(cmdAddDev, ctrlCmd{devID: info.devID, queueID: 0xffff, len: uint16(unsafe.Sizeof(info)), addr: uint64(uintptr(p))}, p)
	if err != nil {
		return devInfo{}, fmt.Errorf("ublk: adding a device (ADD_DEV): %w", err)
	}
	return info, nil
}

// setParams sends SET_PARAMS.
func (c *Control) setParams(id uint32, pr params) error {
	p := unsafe.Pointer(&pr)
	_, err := c.send(cmdSetParams, ctrlCmd{devID: id, queueID: 0xffff, len: uint16(pr.len), addr: uint64(uintptr(p))}, p)
	if err != nil {
		return fmt.Errorf("ublk: /dev/ublkb%d: setting its parameters (SET_PARAMS): %w", id, err)
	}
	return nil
}

// devInfo sends GET_DEV_INFO.
func (c *Control) devInfo(id uint32) (devInfo, error) {
	var info devInfo
	p := unsafe.Pointer(&info)
	_, err := c.send(cmdGetDevInfo, ctrlCmd{devID: id, queueID: 0xffff, len: uint16(unsafe.Sizeof(info)), addr: uint64(uintptr(p))}, p)
	return info, err
}

// features sends GET_FEATURES and returns the device flags the driver
// supports; 0 from a driver without the command (before Linux 6.5).
func (c *Control) features() uint64 {
	var f uint64
	p := unsafe.Pointer(&f)
	if _, err := c.send(cmdGetFeatures, ctrlCmd{devID: ^uint32(0), queueID: 0xffff, len: 8, addr: uint64(uintptr(p))}, p); err != nil {
		return 0
	}
	return f
}

// simple sends a command that carries at most the server's pid.
func (c *Control) simple(nr, id uint32, what string) error {
	_, err := c.send(nr, ctrlCmd{devID: id, queueID: 0xffff, data: uint64(os.Getpid())}, nil)
	if err != nil {
		return fmt.Errorf("ublk: /dev/ublkb%d: %s: %w", id, what, err)
	}
	return nil
}

// StopDev removes /dev/ublkb<id> (STOP_DEV) after the requests in flight
// are served; the server's queues keep running until it stops them.
func (c *Control) StopDev(id int) error {
	return c.simple(cmdStopDev, uint32(id), "stopping (STOP_DEV)")
}

// DelDev frees device id (DEL_DEV); it waits until its server has closed
// /dev/ublkc<id>.
func (c *Control) DelDev(id int) error { return c.simple(cmdDelDev, uint32(id), "deleting (DEL_DEV)") }

// Exists reports whether device id exists (GET_DEV_INFO succeeds).
func (c *Control) Exists(id int) bool {
	_, err := c.devInfo(uint32(id))
	return err == nil
}
