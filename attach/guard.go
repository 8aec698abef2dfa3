package attach

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/nbdloop/nbdloop/sources"
)

// probeLen is how many first bytes of a file the probe reads, and so how
// many the probe guard protects.
const probeLen = 4096

// ErrProbeGuard is returned (wrapping EPERM, which the kernel passes on)
// for a write that would make a raw image probe as another format.
var ErrProbeGuard = fmt.Errorf("write refused: it would turn a raw image into another format (attach with --format raw to allow it): %w", syscall.EPERM)

// probeGuard serves a file whose format was probed as raw, and keeps it
// raw: a write, zero or trim that would make its first probeLen bytes match
// a row of the probe table fails with ErrProbeGuard, and the device's log
// gets a line. Otherwise a guest could write a VMDK descriptor or a qcow2
// header naming a host file to its first sector, and the next attach or
// restart would serve that file (qemu restricts writes to block 0 of
// probed-raw images for the same reason). Reads, and writes past the first
// probeLen bytes, pass through untouched.
type probeGuard struct {
	next sources.Source
	path string
	logf func(format string, args ...any)

	mu      sync.Mutex // serializes changes to the first bytes
	head    [probeLen]byte
	refused atomic.Int64
}

// maxGuardLog is how many refusals are logged one by one; later ones are
// only counted, every 1000th logged.
const maxGuardLog = 10

func newProbeGuard(next sources.Source, path string, logf func(string, ...any)) *probeGuard {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &probeGuard{next: next, path: path, logf: logf}
}

func (g *probeGuard) ReadAt(p []byte, off int64) (int, error) { return g.next.ReadAt(p, off) }

func (g *probeGuard) WriteAt(p []byte, off int64) (int, error) {
	if off >= probeLen {
		return g.next.WriteAt(p, off)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.check("write", off, int64(len(p)), p); err != nil {
		return 0, err
	}
	return g.next.WriteAt(p, off)
}

func (g *probeGuard) Zero(off, length int64, mayTrim bool) error {
	if off >= probeLen {
		return g.next.Zero(off, length, mayTrim)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.check("write-zeroes", off, length, nil); err != nil {
		return err
	}
	return g.next.Zero(off, length, mayTrim)
}

// Trim may leave zeros or the old bytes: both must probe as raw.
func (g *probeGuard) Trim(off, length int64) error {
	if off >= probeLen {
		return g.next.Trim(off, length)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.check("trim", off, length, nil); err != nil {
		return err
	}
	return g.next.Trim(off, length)
}

// check reads the first bytes, lays the request over them (p, or zeros when
// p is nil) and refuses it if the result matches a probed format. g.mu held.
func (g *probeGuard) check(op string, off, length int64, p []byte) error {
	n := min(int64(probeLen), g.next.Size())
	head := g.head[:n]
	if k, err := g.next.ReadAt(head, 0); err != nil && int64(k) != n {
		return err
	}
	end := min(off+length, n)
	if p != nil {
		copy(head[off:end], p)
	} else {
		clear(head[off:end])
	}
	for _, fm := range probeTable {
		if fm.match(head) {
			if c := g.refused.Add(1); c <= maxGuardLog || c%1000 == 0 {
				g.logf("%s: %s of bytes %d-%d refused with EPERM: the first sector would then probe as %s, and the next attach or restart would open it as one (%d refused so far; attach with --format raw if the device is meant to hold such an image)",
					g.path, op, off, off+length-1, fm.name, c)
			}
			return ErrProbeGuard
		}
	}
	return nil
}

func (g *probeGuard) Size() int64        { return g.next.Size() }
func (g *probeGuard) Caps() sources.Caps { return g.next.Caps() }
func (g *probeGuard) Flush() error       { return g.next.Flush() }
func (g *probeGuard) Close() error       { return g.next.Close() }

// RAMRegion passes on the file's pages for sendfile (nbd's ramRegioner):
// reads are not guarded.
func (g *probeGuard) RAMRegion(off, n int64) (int, int64, bool) {
	if r, ok := g.next.(interface {
		RAMRegion(off, n int64) (int, int64, bool)
	}); ok {
		return r.RAMRegion(off, n)
	}
	return -1, 0, false
}

// RAMWriteRegion passes on the file's pages for a server that writes them
// itself (ublk's user copy), past the first probeLen bytes only: writes
// there are checked by WriteAt.
func (g *probeGuard) RAMWriteRegion(off, n int64) (int, int64, bool) {
	if off < probeLen {
		return -1, 0, false
	}
	if r, ok := g.next.(interface {
		RAMWriteRegion(off, n int64) (int, int64, bool)
	}); ok {
		return r.RAMWriteRegion(off, n)
	}
	return -1, 0, false
}

// Extents passes the file's extents on: the guard changes no bytes.
func (g *probeGuard) Extents(off, length int64, fn func(sources.Extent) bool) error {
	return sources.Extents(g.next, off, length, fn)
}
