package httpsrc

import "sync"

// DiskBudget is the room that the objects of one device may take in
// Options.CacheDir together. Each object's file is given, when it is
// opened, what is left of it (at most what the object's blocks need), and
// gives it back when the object is closed; an object opened when nothing
// is left is cached in memory only. So however many objects a device
// reads (a qcow2 backing chain, the extents a VMDK descriptor names),
// their files hold at most the budget's bytes of blocks. The objects
// opened first (the image, then what it names, in order) are served
// first, so a restarted server opening the same objects gives each file
// the room it had. It is safe for concurrent use.
type DiskBudget struct {
	mu   sync.Mutex
	left int64
}

// NewDiskBudget returns a DiskBudget of size bytes (DefaultCacheSize if
// size is 0 or less).
func NewDiskBudget(size int64) *DiskBudget {
	if size <= 0 {
		size = DefaultCacheSize
	}
	return &DiskBudget{left: size}
}

// take returns the whole blocks of size bs, up to want bytes, that are
// left, and counts them as taken; 0 when not one block is left.
func (b *DiskBudget) take(want, bs int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(want, b.left) / bs * bs
	b.left -= n
	return n
}

// give returns n bytes that take handed out.
func (b *DiskBudget) give(n int64) {
	b.mu.Lock()
	b.left += n
	b.mu.Unlock()
}
