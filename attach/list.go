package attach

import (
	"strings"
)

// Device states shown by `list`.
const (
	StateRunning = "running" // nbdloop's server process is alive
	StateDead    = "dead"    // the server process is gone; the kernel still holds the device
	// StateRestarting: the server died and its supervisor is starting
	// another.
	StateRestarting = "restarting"
	StateForeign    = "foreign" // attached by another program (nbd-client, qemu-nbd, ...)
)

// List describes every attached nbd device (one with a server pid in
// sysfs), in index order, or only those in indices when given; without
// indices, nbdloop's ublk devices follow (ublk_list.go). Stale state
// records (the kernel no longer has the device) are ignored.
func List(indices []int) ([]Device, error) {
	return realHost().list(indices)
}

func (h host) list(indices []int) ([]Device, error) {
	sys := h.sys
	all, err := sys.Devices()
	if err != nil {
		return nil, err
	}
	want := map[int]bool{}
	for _, i := range indices {
		want[i] = true
	}
	dir := h.stateDir
	devs := []Device{}
	for _, index := range all {
		if len(want) > 0 && !want[index] {
			continue
		}
		pid, ok, err := sys.PID(index)
		if err != nil || !ok {
			continue
		}
		d := Device{Name: deviceName(index), Index: index, PID: pid}
		d.Size, _ = sys.Size(index)
		d.RO, _ = sys.ReadOnly(index)
		d.Connections, _ = sys.Connections(index)
		d.Backend, _ = sys.Backend(index)
		d.Partitions, _ = sys.Partitions(index)
		d.Mounts = h.mounts(index)
		st := readState(dir, index)
		switch {
		case st != nil && st.BackendID == d.Backend:
			// The record, with what sysfs says now; sysfs keeps the pid
			// of the first server, a restarted one is in the record.
			live := d
			d = *st.device()
			d.Size, d.RO, d.Connections, d.Partitions, d.Mounts = live.Size, live.RO, live.Connections, live.Partitions, live.Mounts
			switch {
			case st.DeadReason != "":
				d.State, d.Reason = StateDead, st.DeadReason
			case !st.server().alive() && st.supervisor().alive():
				d.State = StateRestarting
			case !st.server().alive():
				d.State = StateDead
				d.Reason = "the server died and no supervisor restarts it (nbdloop restart " + d.Name + ", or detach it)"
			}
		case strings.HasPrefix(d.Backend, "nbdloop:"):
			// Ours, but the record is gone or belongs to an older attach.
			d.Source = "?"
			d.State = StateRunning
			if !processAlive(pid) {
				d.State = StateDead
			}
		default:
			d.State = StateForeign
			d.Source = d.Backend
			if d.Source == "" {
				d.Source = "-"
			}
		}
		devs = append(devs, d)
	}
	if len(want) == 0 {
		devs = append(devs, h.listUblk()...)
	}
	return devs, nil
}
