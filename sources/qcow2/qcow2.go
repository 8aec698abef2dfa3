package qcow2

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
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
	f     file
	path  string
	files Files // nil: backing files are opened by path
	h     *header
	ro    bool

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

// file is the image file: an *os.File, or a read-only sourceFile.
type file interface {
	io.ReaderAt
	io.WriterAt
	Close() error
}

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

// charge takes n bytes from the budget for what, counting them as this
// image's.
func (im *Image) charge(n int64, what string) error {
	if err := im.budget.Charge(n, what); err != nil {
		return err
	}
	im.charged += n
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
