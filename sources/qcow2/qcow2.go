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
// table at most 8 MiB, backing name at most 1023 bytes), every table entry
// is checked before use, memory is bounded by Options.CacheSize per image
// of the chain, and backing chains are limited in depth with loops
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
	// always cached.
	CacheSize int64
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
	}
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

	cache := opts.CacheSize
	if cache <= 0 {
		cache = DefaultCacheSize
	}
	// Three quarters for L2 tables, the rest for decompressed clusters and
	// refcount blocks.
	im.l2 = newTableCache(int(max(4, cache*3/4/im.cs)))
	im.ccache = newClusterCache(int(max(2, cache/8/im.cs)))
	im.bufs.New = func() any { b := make([]byte, im.cs); return &b }

	l1 := make([]byte, int64(h.l1Size)*8)
	if err := preadFull(f, l1, int64(h.l1Offset)); err != nil {
		return nil, fmt.Errorf("reading the L1 table: %w", err)
	}
	im.l1 = make([]uint64, h.l1Size)
	for i := range im.l1 {
		im.l1[i] = binary.BigEndian.Uint64(l1[i*8:])
	}
	im.l1Dirty = make([]bool, (int64(len(l1))+im.cs-1)/im.cs)

	if h.compressionType == compressionZstd {
		im.zstd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(uint64(2*im.cs)), zstd.WithDecoderMaxWindow(uint64(max(im.cs, zstd.MinWindowSize))))
		if err != nil {
			return nil, fmt.Errorf("starting the zstd decoder: %w", err)
		}
	}

	if h.backingFile != "" {
		if depth+1 >= MaxBackingDepth {
			im.closeDecoders()
			return nil, fmt.Errorf("backing chain is deeper than %d images (flatten it: qemu-img convert -O qcow2 IMAGE NEW.qcow2)", MaxBackingDepth)
		}
		if err := im.openBacking(opts, depth, seen); err != nil {
			im.closeDecoders()
			return nil, err
		}
	}

	if !im.ro {
		if err := im.initWrite(opts); err != nil {
			im.closeBacking()
			im.closeDecoders()
			return nil, err
		}
	}
	return im, nil
}

// openBacking opens the backing file named in the header, relative to the
// image's directory unless absolute, with the format of the backing format
// extension (probed from its first bytes when absent).
func (im *Image) openBacking(opts Options, depth int, seen map[fileID]bool) error {
	name := im.h.backingFile
	if len(name) > 0 && name[0] != '/' {
		if u := filepath.Dir(im.path); u != "" {
			name = filepath.Join(u, name)
		}
	}
	if strings.HasPrefix(im.h.backingFile, "json:") || containsProtocol(im.h.backingFile) {
		return fmt.Errorf("backing file %q: %w (only plain file names are; rebase the image: qemu-img rebase -b FILE -F FORMAT IMAGE)", im.h.backingFile, ErrUnsupported)
	}
	format := im.h.backingFormat
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("opening the backing file: %w", err)
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
		b, err := newImage(f, name, Options{ReadOnly: true, CacheSize: opts.CacheSize}, depth+1, seen)
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
