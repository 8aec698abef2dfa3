package attach

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/kernel"
)

// Resize, as losetup -c: /dev/nbdN takes its file's new size without being
// detached. A Source's size is fixed while it is open, so the server hands
// over as for a restart, on SIGWINCH (it exits with exitResizeRequested),
// and its supervisor starts a new one with the record marked Resize: that
// server opens the file at its new size, takes the device over with
// RECONFIGURE (new sockets) and then resizes it with a second RECONFIGURE
// (NBD_ATTR_SIZE_BYTES; the kernel resizes a live device and tells the
// block layer). The two are separate because the kernel freezes the queue
// to resize, which would wait for I/O that waits for the new sockets. I/O
// pauses while the servers change, as in a restart, and nothing is unmounted.

// Resize makes device index take its source's current size and returns the
// device as list shows it. Only raw files and block devices grow and
// shrink, and only on a device that a live supervisor and server serve.
func Resize(ctx context.Context, index int) (*Device, error) {
	return realHost().resize(ctx, index)
}

func (h host) resize(ctx context.Context, index int) (*Device, error) {
	dev := deviceName(index)
	if _, bound, err := h.sys.PID(index); err != nil || !bound {
		return nil, fmt.Errorf("%s: not attached", dev)
	}
	st := readState(h.stateDir, index)
	backend, _ := h.sys.Backend(index)
	if st == nil || st.BackendID != backend {
		return nil, fmt.Errorf("%s: not attached by nbdloop, or its state record is gone: cannot resize it", dev)
	}
	if why := notResizable(st); why != "" {
		return nil, fmt.Errorf("%s: cannot resize: %s", dev, why)
	}
	if !st.server().alive() || !st.supervisor().alive() {
		return nil, fmt.Errorf("%s: cannot resize: its server is not running under a supervisor (attached with --no-restart or --foreground, or dead: nbdloop restart %s)", dev, dev)
	}
	size, err := newSize(st)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot resize: %w", dev, err)
	}
	if size != st.Size {
		if err := st.server().signal(syscall.SIGWINCH); err != nil {
			return nil, fmt.Errorf("%s: asking server %d to hand over: %w", dev, st.PID, err)
		}
		var cur *State
		err := waitFor(ctx, 30*time.Second, func() bool {
			cur = readState(h.stateDir, index)
			return cur != nil && cur.PID != st.PID && cur.server().alive()
		})
		if err != nil {
			why := ""
			if cur != nil && cur.DeadReason != "" {
				why = ": " + cur.DeadReason
			}
			return nil, fmt.Errorf("%s: no new server serves the device (%v)%s", dev, err, why)
		}
	}
	devs, err := h.list([]int{index})
	if err != nil || len(devs) != 1 {
		return nil, fmt.Errorf("%s: resized, but listing it failed: %v", dev, err)
	}
	return &devs[0], nil
}

// notResizable says why the device of st cannot change size, or "".
func notResizable(st *State) string {
	cfg := st.Config
	switch {
	case cfg.Layout != "" || cfg.Partition > 0:
		return "a composite device (--concat, --partitions, --partition) keeps the size it was built with"
	case st.Format != "raw":
		return fmt.Sprintf("%s has a fixed size (only raw files and block devices can be resized)", st.Format)
	}
	if why := notRestartable(cfg, st.Format); why != "" {
		return why
	}
	return ""
}

// newSize opens the source of st as a new server would and returns its
// size now, or why a server could not serve it.
func newSize(st *State) (int64, error) {
	cfg := st.Config
	spec, err := ParseSpec(cfg.Source)
	if err != nil {
		return 0, err
	}
	if err := checkFiles(cfg.Files); err != nil {
		return 0, err
	}
	opened, err := OpenSource(spec, OpenOptions{
		ReadOnly: true, BlockSize: cfg.BlockSize, Offset: cfg.Offset, SizeLimit: cfg.SizeLimit,
		Format: cfg.Format, ExpectFormat: st.Format, AllowPaths: cfg.AllowPaths, AllowDevices: cfg.AllowDevices,
		MetadataLimit: cfg.MetadataLimit, SpillLimit: cfg.SpillLimit,
	})
	if err != nil {
		return 0, err
	}
	defer opened.Source.Close()
	return opened.Source.Size(), nil
}

// resize tells the kernel a taken-over device's new size, when the server
// was started for a resize.
func (r *serverRun) resize() error {
	res := r.so.resume
	if !res.Resize || r.src.Size() == res.Size {
		return nil
	}
	err := r.fam.Reconfigure(kernel.ReconfigureRequest{Index: r.index, BackendID: r.backendID, Size: uint64(r.src.Size())})
	if err != nil {
		return fmt.Errorf("/dev/nbd%d: resizing from %d to %d bytes (RECONFIGURE): %w", r.index, res.Size, r.src.Size(), err)
	}
	r.logger.Printf("/dev/nbd%d: resized from %d to %d bytes", r.index, res.Size, r.src.Size())
	return nil
}
