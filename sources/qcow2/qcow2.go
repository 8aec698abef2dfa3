// Package qcow2 serves a qcow2 disk image (qemu's format) as a
// sources.Source, read-write: `nbdloop attach disk.qcow2`.
//
// What it serves: qcow2 version 2 (compat=0.10) and 3 (compat=1.1) with any
// cluster size from 512 bytes to 2 MiB and any refcount width (1 to 64
// bits); unallocated, zero (v3 zero flag) and allocated clusters;
// compressed clusters (deflate, and zstd with compression_type=zstd),
// read; extended L2 entries (32 subclusters per cluster); backing files,
// raw or qcow2, to a depth of MaxBackingDepth, named relative to the
// image's directory when not absolute, read-only, and reading as zeros past
// their end.
//
// Writes (images without internal snapshots, encryption or an external
// data file) allocate clusters with consistent refcounts, growing the
// refcount blocks and the refcount table as needed and reusing freed
// clusters; a partial write to a cluster that is not yet allocated copies
// the rest of the cluster from the backing file (or zeros); overwriting a
// compressed cluster writes a new standard cluster and drops the
// compressed one's refcounts. Zero sets the v3 zero flag on whole clusters
// (keeping the cluster allocated when mayTrim is false), and in v2 images
// deallocates whole clusters when there is no backing file, or writes
// zeros; Trim deallocates whole clusters the same way (partial clusters
// keep their data, which the Trim contract allows).
//
// Extents (sources.Extenter, for NBD block status) come from the L2
// tables: allocated and compressed clusters are data, zero clusters holes,
// unallocated ones what the backing file reports (a raw backing file is
// all data).
//
// Crash safety: data is written at once, but changed refcount blocks and
// new L2 and L1 entries stay in memory until Flush, which writes the
// refcount blocks and syncs them with the data, then writes the L2 tables,
// syncs, writes the L1 entries and syncs again, and only then drops the
// refcounts of clusters that no longer have a reference (written then,
// synced by the next flush). An L2 entry points at a new cluster only once
// the cluster's data is written. A crash can therefore leak clusters
// (qemu-img check -r leaks reclaims them), never leave a reference to
// unwritten data or a cluster in use with a refcount of 0. The image is not marked dirty while open,
// since its refcounts are always valid; lazy refcounts are not used.
//
// Refused: encryption, external data files and unknown incompatible
// features fail Open with an error wrapping ErrUnsupported. Images with
// internal snapshots are served read-only, with a warning (Warnings).
// Images whose dirty bit is set (qemu crashed with lazy refcounts) or that
// qemu marked corrupt are refused for writing, with an error that says to
// run `qemu-img check -r all`; read-only they open.
//
// Safety with untrusted images: every header field is checked against the
// file and against caps taken from qemu (L1 table at most 32 MiB, refcount
// table at most 8 MiB, backing name at most 1023 bytes), without sums or
// products that could wrap; every table entry is checked before use. The
// memory of the tables (L1, refcount table, and the caches, at most
// Options.CacheSize per image) is charged to Options.Budget, one for the
// whole chain, and an image that needs more is refused at Open. Backing
// files are opened through Options.Named, read-only: by default only
// regular files beneath the top image's directory, so a name that is
// absolute, leaves by "..", or is a symbolic link leading out, a FIFO or a
// device is refused. Backing chains are limited in depth, with loops
// detected.
//
// Concurrency: Caps().Parallel is true. Reads, and writes to clusters that
// are already allocated, run in parallel under a shared lock; allocation
// and the other metadata changes take it exclusively. A write covering
// whole clusters that need allocating holds it only to allocate them (a
// host-contiguous run when the file allows) and then to point the L2
// entries at them: the data goes out in between, in one pwrite per run.
//
// Example:
//
//	img, err := qcow2.Open("disk.qcow2", qcow2.Options{})
//	if err != nil {
//		return err
//	}
//	defer img.Close()
//	for _, w := range img.Warnings() {
//		log.Print(w)
//	}
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
)

// DefaultCacheSize is the memory given to L2 tables, refcount blocks and
// decompressed clusters of each image in a chain when Options.CacheSize is
// 0: 32 MiB of L2 tables map 256 GiB of a 64 KiB-cluster image.
const DefaultCacheSize = 32 << 20

// MaxBackingDepth is the longest backing chain Open follows.
const MaxBackingDepth = 16

// Options tune Open. The zero value opens the image read-write with the
// default cache size.
type Options struct {
	// ReadOnly opens the image (and always its backing files) read-only;
	// modifying calls then fail with sources.ErrReadOnly.
	ReadOnly bool
	// CacheSize bounds the metadata and decompression cache of each image
	// in the chain, in bytes (0: DefaultCacheSize). At least 4 tables are
	// always cached when the image has that many.
	CacheSize int64
	// Named opens the backing files that the images of the chain name,
	// always read-only; its zero value (Dir "") confines them beneath the
	// directory of the image at path (sources.Confine). The image at path
	// itself is opened as named.
	Named sources.NamedFiles
	// Budget is charged, for the whole backing chain, the memory of the
	// tables kept in memory: the L1 and refcount tables and what each
	// image's caches can grow to (at most CacheSize, less when the image's
	// tables cannot fill them). An image whose metadata would exceed it is
	// refused at Open with a *sources.BudgetError; Close gives it back.
	// nil: sources.NewBudget(0), the default limit.
	Budget *sources.Budget
}

// Image is an open qcow2 image. It implements sources.Source.
type Image struct {
	f    *os.File
	path string
	h    *header
	ro   bool

	size     int64 // virtual size
	cbits    uint
	cs       int64
	l2bits   uint  // log2 of entries per L2 table
	fileSize int64 // at open

	// meta guards every metadata structure below and in the caches:
	// readers (reads, in-place writes) hold it shared, everything that
	// changes a table or allocates holds it exclusively.
	meta    sync.RWMutex
	l1      []uint64
	l1Dirty []bool // per L1 cluster: modified in memory since the last flush
	// l1HasDirty is set when some l1Dirty is.
	l1HasDirty bool
	l2         *tableCache

	// Refcounts, loaded only when writable.
	refTable    []uint64
	refTableOff int64
	// reserved host clusters are being allocated and must not be chosen
	// for refcount blocks or tables meanwhile.
	reserved   []hostRange
	zeroBuf    []byte // one cluster of zeros, made on first use
	refBlocks  *tableCache
	refBits    uint
	refEntries int64 // per refcount block
	refMax     uint64
	freeHint   int64 // no free cluster lies below this one
	// endCluster is the first cluster past the file at open and past
	// every cluster allocated since: clusters from there on are free
	// whatever a (corrupt) refcount says, which bounds allocation scans.
	endCluster  int64
	pendingFree []hostRange

	backing     reader // nil: none
	backingSize int64

	zstd   *zstd.Decoder
	ccache *clusterCache
	bufs   sync.Pool // *[]byte of one cluster
	flates sync.Pool // io.ReadCloser implementing flate.Resetter

	dataWritten atomic.Bool // a write since the last Flush
	warnings    []string
	closed      atomic.Bool

	budget  *sources.Budget
	charged int64 // bytes taken from budget by this image (not its backing file)
}

// hostRange is a byte range of the image file whose clusters lose one
// refcount at the next flush.
type hostRange struct{ off, n int64 }

// reader is what an image needs from a backing file.
type reader interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// Open opens the qcow2 image at path and its backing chain.
func Open(path string, opts Options) (*Image, error) {
	if opts.Named.Dir == "" {
		opts.Named.Dir = sources.Confine(path).Dir
	}
	if opts.Budget == nil {
		opts.Budget = sources.NewBudget(0)
	}
	return open(path, opts, 0, map[fileID]bool{})
}

type fileID struct{ dev, ino uint64 }

func open(path string, opts Options, depth int, seen map[fileID]bool) (*Image, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	im, err := newImage(f, path, opts, depth, seen)
	if err != nil {
		f.Close()
		return nil, err
	}
	return im, nil
}

func newImage(f *os.File, path string, opts Options, depth int, seen map[fileID]bool) (*Image, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id := fileID{uint64(st.Dev), st.Ino}
		if seen[id] {
			return nil, fmt.Errorf("backing chain loops back to %s (fix the chain: qemu-img rebase)", path)
		}
		seen[id] = true
	}
	fileSize := fi.Size()
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
	im := &Image{
		f: f, path: path, h: h, ro: opts.ReadOnly,
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
	if h.nbSnapshots > 0 && !im.ro {
		im.ro = true
		im.warnings = append(im.warnings, fmt.Sprintf("the image has %d internal snapshots, which nbdloop cannot write around: attached read-only (to write, drop them: qemu-img snapshot -d NAME IMAGE)", h.nbSnapshots))
	}
	if !im.ro && h.incompatible&incDirty != 0 {
		return nil, fmt.Errorf("the image's dirty bit is set, so its refcounts may be stale (repair it: qemu-img check -r all %s, or attach it read-only: -r)", path)
	}
	if !im.ro && h.incompatible&incCorrupt != 0 {
		return nil, fmt.Errorf("qemu marked the image corrupt (repair it: qemu-img check -r all %s, or attach it read-only: -r)", path)
	}

	if err := im.charge(int64(h.l1Size)*8, fmt.Sprintf("the L1 table of %s (%d entries)", path, h.l1Size)); err != nil {
		return nil, err
	}
	im.l1 = make([]uint64, h.l1Size)
	if err := readTable(f, im.l1, int64(h.l1Offset)); err != nil {
		return nil, fmt.Errorf("reading the L1 table: %w", err)
	}
	im.l1Dirty = make([]bool, (int64(h.l1Size)*8+im.cs-1)/im.cs)

	if err := im.makeCaches(opts); err != nil {
		return nil, err
	}
	im.bufs.New = func() any { b := make([]byte, im.cs); return &b }

	if h.compressionType == compressionZstd {
		im.zstd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(uint64(2*im.cs)), zstd.WithDecoderMaxWindow(uint64(max(im.cs, zstd.MinWindowSize))))
		if err != nil {
			return nil, fmt.Errorf("starting the zstd decoder: %w", err)
		}
	}

	if h.backingFile != "" {
		if depth+1 >= MaxBackingDepth {
			return nil, fmt.Errorf("backing chain is deeper than %d images (flatten it: qemu-img convert -O qcow2 IMAGE NEW.qcow2)", MaxBackingDepth)
		}
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

// charge takes n bytes from the budget for what, counting them as this
// image's.
func (im *Image) charge(n int64, what string) error {
	if err := im.budget.Charge(n, what); err != nil {
		return err
	}
	im.charged += n
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
func readTable(f *os.File, t []uint64, off int64) error {
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

// openBacking opens the backing file named in the header, relative to the
// image's directory unless absolute, through opts.Named (so confined, and
// read-only), with the format of the backing format extension (probed from
// its first bytes when absent).
func (im *Image) openBacking(opts Options, depth int, seen map[fileID]bool) error {
	if strings.HasPrefix(im.h.backingFile, "json:") || containsProtocol(im.h.backingFile) {
		return fmt.Errorf("backing file %q: %w (only plain file names are; rebase the image: qemu-img rebase -b FILE -F FORMAT IMAGE)", im.h.backingFile, ErrUnsupported)
	}
	if strings.ContainsFunc(im.h.backingFile, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("backing file %q of %s: a control character in a file name (rebase the image: qemu-img rebase -b FILE -F FORMAT IMAGE)", im.h.backingFile, im.path)
	}
	base, err := filepath.Abs(filepath.Dir(im.path))
	if err != nil {
		return fmt.Errorf("backing file %q of %s: %w", im.h.backingFile, im.path, err)
	}
	format := im.h.backingFormat
	f, name, err := opts.Named.Open(base, im.h.backingFile, false)
	if err != nil {
		return fmt.Errorf("backing file of %s: %w", im.path, err)
	}
	if format == "" {
		var m [4]byte
		if n, _ := f.ReadAt(m[:], 0); n == 4 && binary.BigEndian.Uint32(m[:]) == magic {
			format = "qcow2"
		} else {
			format = "raw"
		}
	}
	switch format {
	case "raw":
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && seen[fileID{uint64(st.Dev), st.Ino}] {
			f.Close()
			return fmt.Errorf("backing chain loops back to %s (fix the chain: qemu-img rebase)", name)
		}
		size := fi.Size()
		if fi.Mode()&os.ModeDevice != 0 {
			if size, err = f.Seek(0, io.SeekEnd); err != nil {
				f.Close()
				return err
			}
		}
		im.backing = &rawFile{f: f, size: size}
	case "qcow2":
		bopts := opts
		bopts.ReadOnly = true
		b, err := newImage(f, name, bopts, depth+1, seen)
		if err != nil {
			f.Close()
			return fmt.Errorf("backing file %s: %w", name, err)
		}
		for _, w := range b.warnings {
			im.warnings = append(im.warnings, "backing file "+name+": "+w)
		}
		im.backing = b
	default:
		f.Close()
		return fmt.Errorf("backing file %s has format %q: %w (raw and qcow2 are)", name, format, ErrUnsupported)
	}
	im.backingSize = im.backing.Size()
	return nil
}

// containsProtocol tells names such as nbd://host/x or http://... from
// file names.
func containsProtocol(name string) bool {
	for i := 0; i+2 < len(name); i++ {
		switch c := name[i]; {
		case c == '/':
			return false
		case c == ':':
			return name[i+1] == '/' && name[i+2] == '/'
		}
	}
	return false
}

// rawFile is a raw backing file.
type rawFile struct {
	f    *os.File
	size int64
}

func (r *rawFile) ReadAt(p []byte, off int64) (int, error) { return len(p), preadFull(r.f, p, off) }
func (r *rawFile) Size() int64                             { return r.size }
func (r *rawFile) Close() error                            { return r.f.Close() }

// preadFull fills p from f at off; bytes past the end of the file read as
// zeros, as qemu's file driver pads short reads.
func preadFull(f *os.File, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := f.ReadAt(p, off)
		p, off = p[n:], off+int64(n)
		if errors.Is(err, io.EOF) {
			clear(p)
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Warnings returns what attach should tell the user, one line each: the
// image (or a backing file) has internal snapshots and is served
// read-only.
func (im *Image) Warnings() []string { return im.warnings }

// Size returns the virtual size.
func (im *Image) Size() int64 { return im.size }

// Caps: parallel; flush, trim and zero unless read-only.
func (im *Image) Caps() sources.Caps {
	return sources.Caps{ReadOnly: im.ro, Flush: !im.ro, Trim: !im.ro, Zero: !im.ro, Parallel: true}
}

// BackingFile returns the backing file name as the header has it ("" for
// none).
func (im *Image) BackingFile() string { return im.h.backingFile }

// ClusterSize returns the cluster size in bytes.
func (im *Image) ClusterSize() int64 { return im.cs }

// Close flushes a writable image and closes it and its backing files. A
// second Close returns nil.
func (im *Image) Close() error {
	if im.closed.Swap(true) {
		return nil
	}
	var err error
	if !im.ro {
		err = im.Flush()
	}
	im.closeBacking()
	im.closeDecoders()
	im.budget.Release(im.charged)
	if e := im.f.Close(); err == nil {
		err = e
	}
	return err
}

func (im *Image) closeBacking() {
	if im.backing != nil {
		im.backing.Close()
	}
}

func (im *Image) closeDecoders() {
	if im.zstd != nil {
		im.zstd.Close()
	}
}

func (im *Image) getBuf() *[]byte  { return im.bufs.Get().(*[]byte) }
func (im *Image) putBuf(b *[]byte) { im.bufs.Put(b) }
