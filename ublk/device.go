package ublk

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// Options are the shape of a device.
type Options struct {
	// Queues is the number of hardware queues (0: one per CPU).
	Queues int
	// Depth is the number of requests each queue has in flight (0: 128).
	Depth int
	// BufBytes is the largest request, in bytes (0: 512 KiB).
	BufBytes int
	// BlockSize is the logical and physical block size (0: 512).
	BlockSize int
	// ReadOnly makes the device read-only.
	ReadOnly bool
	// Logf takes the queues' complaints (nil: dropped).
	Logf func(string, ...any)
}

func (o Options) withDefaults() Options {
	if o.Queues <= 0 {
		o.Queues = runtime.NumCPU()
	}
	if o.Depth <= 0 {
		o.Depth = 128
	}
	if o.BufBytes <= 0 {
		o.BufBytes = 512 << 10
	}
	if o.BlockSize == 0 {
		o.BlockSize = 512
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// Device is a ublk device served by this process.
type Device struct {
	// ID is N of /dev/ublkbN.
	ID     int
	ctrl   *Control
	charFd int
	queues []*queue
	served sync.WaitGroup
	done   chan struct{}
	once   sync.Once
	err    error
}

// Name is the block device's path.
func (d *Device) Name() string { return BlockPath(d.ID) }

// BlockPath is the path of block device /dev/ublkbN.
func BlockPath(id int) string { return fmt.Sprintf("/dev/ublkb%d", id) }

// CharPath is the path of the character device /dev/ublkcN.
func CharPath(id int) string { return fmt.Sprintf("/dev/ublkc%d", id) }

// Add creates a device serving src and starts it: ADD_DEV, SET_PARAMS,
// the queues fetching, START_DEV. /dev/ublkbN exists when it returns. On
// failure nothing is left behind.
func Add(ctrl *Control, src sources.Source, o Options) (*Device, error) {
	o = o.withDefaults()
	pr, err := deviceParams(src.Size(), src.Caps(), o.ReadOnly, o.BlockSize, o.BufBytes)
	if err != nil {
		return nil, err
	}
	info, err := ctrl.addDev(devInfo{nrHWQueues: uint16(o.Queues), queueDepth: uint16(o.Depth), maxIOBuf: uint32(o.BufBytes), devID: devIDAny})
	if err != nil {
		return nil, err
	}
	d := &Device{ID: int(info.devID), ctrl: ctrl, charFd: -1, done: make(chan struct{})}
	if err := d.start(src, info, pr, o); err != nil {
		d.teardown(false)
		return nil, err
	}
	return d, nil
}

// start sets the parameters, opens /dev/ublkcN, starts the queues and
// sends START_DEV once they have fetched.
func (d *Device) start(src sources.Source, info devInfo, pr params, o Options) error {
	if err := d.ctrl.setParams(uint32(d.ID), pr); err != nil {
		return err
	}
	var err error
	if d.charFd, err = openChar(CharPath(d.ID)); err != nil {
		return err
	}
	h := newHandler(src, o.ReadOnly)
	// The kernel may give fewer queues or a smaller buffer than asked.
	for i := 0; i < int(info.nrHWQueues); i++ {
		q, err := newQueue(uint16(i), int(info.queueDepth), int(info.maxIOBuf), d.charFd, h, o.Logf)
		if err != nil {
			return err
		}
		d.queues = append(d.queues, q)
	}
	ready := make(chan error, len(d.queues))
	for _, q := range d.queues {
		d.served.Add(1)
		go func() {
			defer d.served.Done()
			if err := q.run(ready); err != nil {
				o.Logf("%v", err)
			}
		}()
	}
	go func() { d.served.Wait(); close(d.done) }()
	for range d.queues {
		if err := <-ready; err != nil {
			return err
		}
	}
	return d.ctrl.simple(cmdStartDev, uint32(d.ID), "starting (START_DEV)")
}

// openChar opens the character device, which devtmpfs creates shortly
// after ADD_DEV.
func openChar(path string) (int, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, syscall.ENOENT) || time.Now().After(deadline) {
			return -1, fmt.Errorf("ublk: opening %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Done is closed when every queue has ended: after Stop, or when the
// kernel tore the device down.
func (d *Device) Done() <-chan struct{} { return d.done }

// Stop removes the device: STOP_DEV (the requests in flight are served
// first), the queues stopped, /dev/ublkcN closed, DEL_DEV. It returns the
// first error and is safe to call more than once.
func (d *Device) Stop() error {
	d.once.Do(func() { d.err = d.teardown(true) })
	return d.err
}

// teardown undoes Add's work as far as it got; with stop it first removes
// the block device.
func (d *Device) teardown(stop bool) error {
	var errs []error
	if stop {
		if err := d.ctrl.StopDev(d.ID); err != nil {
			errs = append(errs, err)
		}
	}
	for _, q := range d.queues {
		if q.stopFd >= 0 {
			q.stop()
		}
	}
	d.served.Wait()
	for _, q := range d.queues {
		q.close()
	}
	if d.charFd >= 0 {
		unix.Close(d.charFd)
		d.charFd = -1
	}
	if err := d.ctrl.DelDev(d.ID); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
