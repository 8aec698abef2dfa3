package ublk

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// Options are the shape of a device.
type Options struct {
	// Queues is the number of hardware queues (0: one per CPU).
	Queues int
	// Depth is the number of requests each queue has in flight (0: 128).
	Depth int
	// BufBytes is the largest request, in bytes (0: 512 KiB, 1 MiB for a
	// Source in a RAM file served with user copy).
	BufBytes int
	// BlockSize is the logical and physical block size (0: 512).
	BlockSize int
	// ReadOnly makes the device read-only.
	ReadOnly bool
	// Recovery lets another server take the device over when this one
	// dies (UBLK_F_USER_RECOVERY with UBLK_F_USER_RECOVERY_REISSUE): the
	// kernel then holds its I/O, and requests the dead server had are
	// sent again to the next one (Recover).
	Recovery bool
	// Fixed asks ADD_DEV for device number ID (/dev/ublkbID), which
	// fails with EEXIST when that number is taken; otherwise the kernel
	// gives the first free number.
	Fixed bool
	ID    int
	// Observe, when not nil, is passed every request served, as the NBD
	// server passes its observer (nbd.Options.Observe): Conn is the
	// queue's number, Flags FUA and, for a write-zeroes that must not
	// unmap, NoHole; Latency runs from when the queue took the request
	// until its result was ready to commit.
	Observe func(request.Request)
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
	// extraProcs is how much serve raised GOMAXPROCS, undone by teardown.
	extraProcs int
	// ram is the mapping of the Source's RAM file (user copy), or nil.
	ram *ramMap
}

// Name is the block device's path.
func (d *Device) Name() string { return BlockPath(d.ID) }

// BlockPath is the path of block device /dev/ublkbN.
func BlockPath(id int) string { return fmt.Sprintf("/dev/ublkb%d", id) }

// CharPath is the path of the character device /dev/ublkcN.
func CharPath(id int) string { return fmt.Sprintf("/dev/ublkc%d", id) }

// Add creates a device serving src and starts it: ADD_DEV, SET_PARAMS,
// the queues fetching, START_DEV. /dev/ublkbN exists when it returns. On
// failure nothing is left behind. While the device is served, GOMAXPROCS
// is raised by the number of queues (their threads mostly wait in the
// kernel); Stop lowers it again.
func Add(ctrl *Control, src sources.Source, o Options) (*Device, error) {
	// A Source in a RAM file is copied by the kernel straight from and to
	// the file's mapping when the driver lets the server copy (user copy).
	var flags uint64
	if r, ok := src.(ramRegioner); ok && ctrl.features()&flagUserCopy != 0 {
		if _, _, ok := r.RAMRegion(0, src.Size()); ok {
			flags |= flagUserCopy
			if o.BufBytes <= 0 {
				o.BufBytes = 1 << 20
			}
		}
	}
	o = o.withDefaults()
	pr, err := deviceParams(src.Size(), src.Caps(), o.ReadOnly, o.BlockSize, o.BufBytes)
	if err != nil {
		return nil, err
	}
	if o.Recovery {
		flags |= flagUserRecovery | flagUserRecoveryReissue
	}
	id := devIDAny
	if o.Fixed {
		if o.ID < 0 || o.ID >= maxDevices {
			return nil, fmt.Errorf("ublk: device number %d: not from 0 to %d", o.ID, maxDevices-1)
		}
		id = uint32(o.ID)
	}
	info, err := ctrl.addDev(devInfo{nrHWQueues: uint16(o.Queues), queueDepth: uint16(o.Depth), maxIOBuf: uint32(o.BufBytes), devID: id, flags: flags})
	if err != nil {
		return nil, err
	}
	d := &Device{ID: int(info.devID), ctrl: ctrl, charFd: -1, done: make(chan struct{})}
	err = ctrl.setParams(uint32(d.ID), pr)
	if err == nil {
		err = d.serve(src, info, o, cmdStartDev, "starting (START_DEV)")
	}
	if err != nil {
		d.teardown(false, true)
		return nil, err
	}
	return d, nil
}

// Recover takes over device id, whose server died, serving src with
// options o (only ReadOnly and Logf matter: the shape is the device's):
// START_USER_RECOVERY once the kernel has let the dead server go (it
// answers EBUSY until then; Recover retries for up to 20 s), the queues
// fetching, END_USER_RECOVERY. The I/O the kernel held resumes. On
// failure the device is left for another try or a detach.
func Recover(ctrl *Control, id int, src sources.Source, o Options) (*Device, error) {
	o = o.withDefaults()
	d := &Device{ID: id, ctrl: ctrl, charFd: -1, done: make(chan struct{})}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ctrl.simple(cmdStartUserRecovery, uint32(id), "taking over from a dead server (START_USER_RECOVERY)")
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	info, err := ctrl.devInfo(uint32(id))
	if err == nil && int64(info.maxIOBuf) < 4096 {
		err = fmt.Errorf("ublk: /dev/ublkb%d: a request size of %d bytes", id, info.maxIOBuf)
	}
	if err == nil {
		err = d.serve(src, info, o, cmdEndUserRecovery, "ending the takeover (END_USER_RECOVERY)")
	}
	if err != nil {
		d.teardown(false, false)
		return nil, err
	}
	return d, nil
}

// serve opens /dev/ublkcN, starts the queues and, once they have fetched,
// sends command nr (START_DEV or END_USER_RECOVERY), which the kernel
// answers when every queue is ready.
func (d *Device) serve(src sources.Source, info devInfo, o Options, nr uint32, what string) error {
	var err error
	if d.charFd, err = openChar(CharPath(d.ID)); err != nil {
		return err
	}
	h := newHandler(src, o.ReadOnly)
	userCopy := info.flags&flagUserCopy != 0 // the device's, also when recovering
	if userCopy {
		d.ram = newRAMMap(src, o.ReadOnly)
		h.ram = d.ram
	}
	// The kernel may give fewer queues or a smaller buffer than asked.
	for i := 0; i < int(info.nrHWQueues); i++ {
		q, err := newQueue(uint16(i), int(info.queueDepth), int(info.maxIOBuf), d.charFd, h, o.Logf)
		if q != nil {
			q.userCopy = userCopy
			if o.Observe != nil {
				q.observe, q.starts = o.Observe, make([]time.Time, q.depth)
			}
		}
		if err != nil {
			return err
		}
		d.queues = append(d.queues, q)
	}
	// A queue's thread waits in the kernel holding its P until the
	// scheduler takes it back (up to 10 ms later when idle): one more P per
	// queue keeps the workers and the rest of the process from waiting
	// for that.
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + len(d.queues))
	d.extraProcs = len(d.queues)
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
	return d.ctrl.simple(nr, uint32(d.ID), what)
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
	d.once.Do(func() { d.err = d.teardown(true, true) })
	return d.err
}

// Abandon stops serving without removing the device, for a server that
// hands the device over to the next one (Recover): the kernel holds its
// I/O meanwhile (a device added with Options.Recovery; another is
// removed by the kernel). Stop and Abandon only act the first time either
// is called.
func (d *Device) Abandon() {
	d.once.Do(func() { d.teardown(false, false) })
}

// teardown undoes Add's work as far as it got: with stop it first removes
// the block device (STOP_DEV), with del it frees the device (DEL_DEV).
func (d *Device) teardown(stop, del bool) error {
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
	if d.extraProcs > 0 {
		runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)-d.extraProcs))
		d.extraProcs = 0
	}
	for _, q := range d.queues {
		q.close()
	}
	d.ram.close()
	d.ram = nil
	if d.charFd >= 0 {
		unix.Close(d.charFd)
		d.charFd = -1
	}
	if del {
		if err := d.ctrl.DelDev(d.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
