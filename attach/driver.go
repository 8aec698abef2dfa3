package attach

import (
	"errors"
	"fmt"

	"github.com/nbdloop/nbdloop/ublk"
)

// The kernel drivers a device can be served through (Config.Driver).
const (
	// DriverNBD is the NBD driver: /dev/nbdN over socketpairs (the
	// default, also spelled "").
	DriverNBD = "nbd"
	// DriverUblk is the userspace block driver ublk_drv: /dev/ublkbN over
	// io_uring commands.
	DriverUblk = "ublk"
)

// DriverNames are the values --driver takes.
func DriverNames() []string { return []string{DriverNBD, DriverUblk} }

// isUblk reports whether the request is for a ublk device.
func (c *Config) isUblk() bool { return c.Driver == DriverUblk }

// validateDriver checks --driver and the flags that only the NBD driver
// has.
func (c *Config) validateDriver() error {
	switch c.Driver {
	case "", DriverNBD:
		return nil
	case DriverUblk:
	default:
		return fmt.Errorf("--driver %q: not a driver (nbd or ublk)", c.Driver)
	}
	for _, f := range []struct {
		set  bool
		flag string
	}{
		{c.Autoclear, "--autoclear"},
		{c.PartScan, "--partscan (the kernel scans a ublk device's partitions by itself)"},
	} {
		if f.set {
			return fmt.Errorf("--driver ublk: %s is for the nbd driver only (use --driver nbd, or leave the flag out)", f.flag)
		}
	}
	return nil
}

// openUblkControl opens the ublk driver's control device, saying what to
// do when the kernel has none.
func openUblkControl() (*ublk.Control, error) {
	ctrl, err := ublk.OpenControl()
	if errors.Is(err, ublk.ErrNoDriver) {
		return nil, fmt.Errorf("%w (load it: modprobe ublk_drv; kernels before 6.0 have none: use --driver nbd)", err)
	}
	return ctrl, err
}
