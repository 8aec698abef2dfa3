package qcow2

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
)

// fileID identifies a file of a backing chain: its device and inode, or
// the location of a file opened through Files.
type fileID struct {
	dev, ino uint64
	loc      string
}

// open opens the image at path (read-only if opts.ReadOnly), depth images
// down a backing chain whose files seen holds.
func open(path string, opts Options, depth int, seen map[fileID]bool) (*Image, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	im, err := openFile(f, path, opts, depth, seen)
	if err != nil {
		f.Close()
		return nil, err
	}
	return im, nil
}

// openFile opens the image in the open file f, at path, depth images down
// a backing chain whose files seen holds, after adding f to them. The
// caller closes f on error.
func openFile(f *os.File, path string, opts Options, depth int, seen map[fileID]bool) (*Image, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := markSeen(fi, path, seen); err != nil {
		return nil, err
	}
	return newImage(f, path, fi.Size(), opts, depth, seen, nil)
}

// newImage opens the image in f, of fileSize bytes, at path, depth images
// down a backing chain whose files seen holds; its backing file is opened
// through files, or by path when files is nil. The caller closes f on
// error.
func newImage(f file, path string, fileSize int64, opts Options, depth int, seen map[fileID]bool, files Files) (*Image, error) {
	h, err := loadHeader(f, fileSize)
	if err != nil {
		return nil, err
	}
	im := &Image{
		f: f, path: path, files: files, h: h, ro: opts.ReadOnly,
		size: int64(h.size), cbits: uint(h.clusterBits), cs: h.clusterSize(), fileSize: fileSize,
		budget: opts.Budget,
	}
	ok := false
	defer func() {
		if !ok {
			im.closeBacking()
			im.closeDecoders()
			im.budget.Release(im.charged)
		}
	}()
	im.l2bits = uint(h.clusterBits) - 3
	if h.extendedL2 {
		im.l2bits--
	}
	if err := im.checkWriteState(); err != nil {
		return nil, err
	}
	if err := im.loadL1(); err != nil {
		return nil, err
	}
	if err := im.makeCaches(opts); err != nil {
		return nil, err
	}
	im.bufs.New = func() any { b := make([]byte, im.cs); return &b }
	if err := im.startZstd(); err != nil {
		return nil, err
	}
	if h.backingFile != "" {
		if err := im.openBacking(opts, depth, seen); err != nil {
			return nil, err
		}
	}
	if !im.ro {
		if err := im.initWrite(); err != nil {
			return nil, err
		}
	}
	ok = true
	return im, nil
}

// markSeen records the file fi, at path, as part of the backing chain,
// and fails if it already is: the chain loops.
func markSeen(fi os.FileInfo, path string, seen map[fileID]bool) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id := fileID{dev: uint64(st.Dev), ino: st.Ino}
		if seen[id] {
			return fmt.Errorf("backing chain loops back to %s (fix the chain: qemu-img rebase)", path)
		}
		seen[id] = true
	}
	return nil
}

// loadHeader reads and parses cluster 0 of the image file f of fileSize
// bytes (or what the file holds of it). An image of virtual size 0 is
// refused.
func loadHeader(f io.ReaderAt, fileSize int64) (*header, error) {
	// Cluster 0 holds the header, its extensions and the backing name:
	// read the header first to learn the cluster size.
	head := make([]byte, min(fileSize, 4096))
	if err := preadFull(f, head, 0); err != nil {
		return nil, fmt.Errorf("reading the header: %w", err)
	}
	if len(head) >= 24 {
		if cb := binary.BigEndian.Uint32(head[20:]); cb >= minClusterBits && cb <= maxClusterBits && int64(1)<<cb > int64(len(head)) {
			head = make([]byte, min(fileSize, int64(1)<<cb))
			if err := preadFull(f, head, 0); err != nil {
				return nil, fmt.Errorf("reading the header: %w", err)
			}
		}
	}
	h, err := parseHeader(head, fileSize)
	if err != nil {
		return nil, err
	}
	if h.size == 0 {
		return nil, fmt.Errorf("image has a virtual size of 0: %w", sources.ErrEmpty)
	}
	return h, nil
}

// checkWriteState serves an image with internal snapshots read-only, with
// a warning, and refuses to open for writing an image whose dirty or
// corrupt bit is set.
func (im *Image) checkWriteState() error {
	h := im.h
	if h.nbSnapshots > 0 && !im.ro {
		im.ro = true
		im.warnings = append(im.warnings, fmt.Sprintf("the image has %d internal snapshots, which nbdloop cannot write around: attached read-only (to write, drop them: qemu-img snapshot -d NAME IMAGE)", h.nbSnapshots))
	}
	if !im.ro && h.incompatible&incDirty != 0 {
		return fmt.Errorf("the image's dirty bit is set, so its refcounts may be stale (repair it: qemu-img check -r all %s, or attach it read-only: -r)", im.path)
	}
	if !im.ro && h.incompatible&incCorrupt != 0 {
		return fmt.Errorf("qemu marked the image corrupt (repair it: qemu-img check -r all %s, or attach it read-only: -r)", im.path)
	}
	return nil
}

// loadL1 reads the L1 table, charging the budget for it.
func (im *Image) loadL1() error {
	h := im.h
	if err := im.charge(int64(h.l1Size)*8, fmt.Sprintf("the L1 table of %s (%d entries)", im.path, h.l1Size)); err != nil {
		return err
	}
	im.l1 = make([]uint64, h.l1Size)
	if err := readTable(im.f, im.l1, int64(h.l1Offset)); err != nil {
		return fmt.Errorf("reading the L1 table: %w", err)
	}
	im.l1Dirty = make([]bool, (int64(h.l1Size)*8+im.cs-1)/im.cs)
	return nil
}

// startZstd starts the zstd decoder of an image whose compressed clusters
// are zstd.
func (im *Image) startZstd() error {
	if im.h.compressionType != compressionZstd {
		return nil
	}
	var err error
	im.zstd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(uint64(2*im.cs)), zstd.WithDecoderMaxWindow(uint64(max(im.cs, zstd.MinWindowSize))))
	if err != nil {
		return fmt.Errorf("starting the zstd decoder: %w", err)
	}
	return nil
}

// makeCaches sizes the L2 table, compressed cluster and (writable images)
// refcount block caches to what they can hold at most: CacheSize, or less
// when the image's tables cannot fill that, and charges the budget for
// them. Three quarters of CacheSize go to L2 tables, an eighth to
// decompressed clusters and an eighth to refcount blocks.
func (im *Image) makeCaches(opts Options) error {
	cache := opts.CacheSize
	if cache <= 0 {
		cache = DefaultCacheSize
	}
	h := im.h
	guestClusters := (int64(h.size) + im.cs - 1) >> im.cbits
	needL1 := (guestClusters + h.l2Entries - 1) / h.l2Entries // <= len(im.l1), checked by parseHeader
	// L2 tables: one per L1 entry that covers the virtual size, and
	// read-only only those that are allocated.
	l2Tables := needL1
	if im.ro {
		l2Tables = 0
		for _, e := range im.l1[:needL1] {
			if e&offsetMask != 0 {
				l2Tables++
			}
		}
	}
	// Compressed clusters: no more than the guest clusters mapped by
	// those tables.
	nL2 := min(max(4, cache*3/4/im.cs), l2Tables)
	nC := min(max(2, cache/8/im.cs), guestClusters, l2Tables*h.l2Entries)
	var nRef int64
	if !im.ro {
		// Refcount blocks: enough to count every cluster the file can
		// hold (what it holds now, two per guest cluster, the L2 tables,
		// a refcount table twice), at least 4, as dirty ones wait for a
		// flush.
		refEntries := im.cs * 8 >> h.refcountOrder
		host := (im.fileSize+im.cs-1)/im.cs + 2*guestClusters + needL1 + 2*maxRefTableBytes/im.cs
		nRef = max(4, min(max(4, cache/8/im.cs), host/refEntries+1))
	}
	need := (nL2 + nC + nRef) * im.cs
	what := fmt.Sprintf("the metadata cache of %s (%d L2 tables, %d compressed clusters, %d refcount blocks of %s)",
		im.path, nL2, nC, nRef, bytesize.Words(im.cs))
	if err := im.charge(need, what); err != nil {
		return err
	}
	im.l2 = newTableCache(int(nL2))
	im.ccache = newClusterCache(int(nC))
	if nRef > 0 {
		im.refBlocks = newTableCache(int(nRef))
	}
	return nil
}

// readTable fills t with the big-endian entries at off in f, reading a
// bounded chunk at a time, so that the table is not held twice.
func readTable(f io.ReaderAt, t []uint64, off int64) error {
	var buf [8192]byte
	for len(t) > 0 {
		n := min(len(t), len(buf)/8)
		b := buf[:n*8]
		if err := preadFull(f, b, off); err != nil {
			return err
		}
		for i := range n {
			t[i] = binary.BigEndian.Uint64(b[i*8:])
		}
		t, off = t[n:], off+int64(len(b))
	}
	return nil
}
