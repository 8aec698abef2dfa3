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
// OpenSource opens an image that is not a file, read-only: one read from a
// sources.Source (an object on a web server), whose backing files are
// opened through Files, relative to the image's location (httpsrc.Named
// resolves them next to the image's URL).
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
// The files are split by job: qcow2.go holds the Image and Open, open.go
// opens an image (header, L1 table, caches), header.go and extensions.go
// parse the header, backing.go opens backing files, read.go serves reads
// and decompresses clusters, write.go serves writes, zero.go Zero and Trim,
// mapping.go changes L1 and L2 entries, alloc.go allocates host clusters,
// refcount.go keeps the refcounts, reftable.go grows the refcount table,
// flush.go writes the metadata in its order, and cache.go caches it.
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
