package attach

import (
	"context"
	"fmt"
	"time"

	"github.com/nbdloop/nbdloop/kernel"
)

// --autoclear, as mount -o loop's LO_FLAGS_AUTOCLEAR: the device detaches
// when the file system on it (or on one of its partitions) is unmounted.
// The NBD driver's NBD_CFLAG_DISCONNECT_ON_CLOSE disconnects a device when
// its last opener closes it; set at CONNECT, it would end the device at
// once, since the server's own open that scans the partition table, udev's
// probe and mount's blkid probe each open and close the device before the
// file system holds it. So the server sets the flag with RECONFIGURE only
// once the device is claimed (mounted, or held by device-mapper or md),
// while it holds the device open itself: when the claim has already ended
// by then, the server's close is the last one and detaches the device.
// Unclaimed, the device stays attached until detached as usual.
//
// The flag lives in the kernel's configuration of the device: a restarted
// server's RECONFIGURE, which does not name the client flags, keeps it, and
// a restarted server arms it again (a no-op if it was armed).

// autoclearPoll is how often a server of an --autoclear device looks
// whether the device has been claimed.
const autoclearPoll = 200 * time.Millisecond

// startAutoclear arms --autoclear in the background once the device is
// claimed; serve's end stops it.
func (r *serverRun) startAutoclear() {
	if !r.cfg.Autoclear {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	r.deferUndo(stop)
	go func() {
		for !r.host.claimed(r.index) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(autoclearPoll):
			}
		}
		if err := r.armAutoclear(); err != nil {
			r.logger.Printf("%s: --autoclear: %v; the device stays attached after its last close", r.dev, err)
			return
		}
		r.logger.Printf("%s: claimed: it detaches when its last opener closes it (--autoclear)", r.dev)
	}()
}

// armAutoclear sets NBD_CFLAG_DISCONNECT_ON_CLOSE while holding the device
// open.
func (r *serverRun) armAutoclear() error {
	release, err := r.host.hold(r.index)
	if err != nil {
		return err
	}
	defer release()
	flags := uint64(kernel.ClientDisconnectOnClose)
	return r.fam.Reconfigure(kernel.ReconfigureRequest{Index: r.index, BackendID: r.backendID, ClientFlags: &flags})
}

// claimed reports whether the device or one of its partitions is mounted
// or held.
func (h host) claimed(index int) bool {
	if len(h.mounts(index)) > 0 {
		return true
	}
	holders, _ := h.sys.Holders(index)
	return len(holders) > 0
}

// ArmAutoclear sets NBD_CFLAG_DISCONNECT_ON_CLOSE on device index now, as
// its server does once it sees the device claimed: mount.nbdloop calls it
// right after mounting, so that an unmount that comes sooner than the
// server looks still detaches the device. backendID is the device's.
func ArmAutoclear(index int, backendID string) error {
	h := realHost()
	fam, err := h.openDriver()
	if err != nil {
		return err
	}
	r := &serverRun{host: h, fam: fam, index: index, backendID: backendID}
	if err := r.armAutoclear(); err != nil {
		return fmt.Errorf("%s: --autoclear: %w", deviceName(index), err)
	}
	return nil
}
