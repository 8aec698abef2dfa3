// Package vmdk serves VMware virtual disks (VMDK) as a sources.Source,
// read-write: `nbdloop attach disk.vmdk`.
//
// OpenSource opens a disk read-only from a sources.Source at a location
// (a URL: `nbdloop attach https://host/disk.vmdk`), its extents and
// parent opened through a Files (httpsrc.Named), which confines their
// names as sources.NamedFiles confines paths.
//
// Open takes the path of a descriptor (the small text file of a split or
// flat disk, which starts with "# Disk DescriptorFile") or of a hosted
// sparse file (magic KDMV: monolithicSparse, streamOptimized, one extent of
// twoGbMaxExtentSparse) and opens the files it names itself, relative to the
// descriptor's directory. It serves the createTypes monolithicSparse,
// monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized
// and vmfs: extents of type SPARSE (hosted sparse, KDMV), FLAT with an
// offset, VMFS/VMFSRAW/VMFSRDM (flat files or devices) and ZERO, with access
// RW, RDONLY (writes fail with EPERM) or NOACCESS (reads and writes fail
// with EIO).
//
// Sparse extents: grain directory and grain tables (the redundant copies
// are kept in sync on writes), zeroed-grain entries (GTE 1, header flag
// bit 2), and a grain directory at the end (GD_AT_END, found through the
// footer). Writes to grains that are not yet allocated append the whole
// grain at the end of the file (the rest of it copied from the parent, or
// zeros), then update the redundant grain table, then the primary one, so
// that a table never points at a grain whose data is not written yet; a
// grain directory entry of 0 gets new tables the same way, the directories
// last. Trim and Zero turn whole grains into zeroed-grain entries where the
// header allows it (qemu-img create -o zeroed_grain=on), and otherwise
// write zeros (Zero) or do nothing (Trim). Flush is fdatasync of every
// extent file written since the last Flush: durability, including of that order, is promised only at
// Flush, as on a real disk with a write cache.
//
// streamOptimized extents (DEFLATE-compressed grains with markers, as for
// OVF appliances) are read-only: the disk is then served read-only and
// Warnings says so. So are version 3 sparse extents that are not
// compressed and extents with the grain directory at the end (as qemu
// does).
//
// Delta disks (parentFileNameHint, as made by `qemu-img create -f vmdk -b
// base.vmdk`) read unallocated grains through their parent, opened
// read-only; the parent's CID must equal the delta's parentCID, else Open
// fails (the parent changed after the delta was made). Chains are followed
// to a depth of 16; a loop is an error.
//
// Safety with untrusted images: the file the user names is trusted, what it
// names is not. Extents and parents are opened through Options.Named: a name
// must resolve, symbolic links included, beneath the top file's directory
// (or a directory the user allowed), and only to a regular file (or a block
// device where allowed); anything else fails Open with an error naming the
// extent or parent and the flag that would allow it. A disk opened
// read-only opens nothing for writing; parents are always opened
// read-only. Every offset and size read from a file is checked against the
// file before use, with sums and products checked for overflow. Memory kept
// for metadata is charged to Options.Budget, shared by all extents and
// parents, and an image that needs more is refused at Open with the
// figures: per sparse extent, the grain directory for the part of the
// extent the descriptor uses (4 bytes per grain table, twice for a
// writable extent with a redundant directory), one grain table (at most 2
// KiB) and, when compressed, one inflated grain and its compressed bytes
// (at most 3 MiB); the descriptor, twice its size. Further cache slots, up
// to Options.CacheSize, are charged as they are first used and, when the
// budget is spent, not taken (the cache evicts instead). Caps bound the
// descriptor (1 MiB, 4096 extents), the grain directory (2^20 entries),
// the grain (1 MiB) and the grain table (512 entries) whatever the budget.
// Writes never go to a grain that a grain table places inside the
// extent's metadata.
//
// Concurrency: Caps().Parallel is true. Reads, and writes to allocated
// grains, of one extent run in parallel; allocating writes, trims and zeros
// of an extent take its metadata lock exclusively.
//
// Extents (sources.Extenter, for NBD block status and READ replies with
// holes) are read from the metadata only: unallocated grains are holes
// (or the parent's extents in a delta disk), zeroed grains zeros,
// allocated grains data; flat extents report their file's holes; ZERO
// extents are holes.
//
// Limits: the hosted sparse format only (not the ESX COWD VMFSSPARSE or
// SESPARSE extents, which fail Open with an error); compressed grains are
// never written; sizes are whole sectors. A KDMV file whose header has a
// capacity of 0 (a descriptor wrapped in a sparse header) is refused.
//
// CID: the first modification writes a new random CID into the
// descriptor, as qemu and VMware do, so that a delta disk made from this one
// before no longer opens (its parentCID no longer matches).
//
// The files are split by job: vmdk.go holds the Disk and Open, files.go
// what a disk reads its files from (paths, or Files for OpenSource), extents.go
// opens the extents (a hosted sparse file alone, or those a descriptor
// lists), descriptor.go parses descriptors, parent.go follows the parents
// of delta disks, io.go serves reads and modifying calls by extent,
// allocation.go reports extents, and
// cid.go writes the new CID. Sparse extents: header.go parses their header,
// sparse.go opens one (header or footer, grain directories, caches),
// sparse_read.go looks up grain tables and reads grains, sparse_write.go
// writes, sparse_alloc.go allocates grains, sparse_tables.go writes grain
// tables and directories, cache.go caches grain tables and stream.go
// inflates compressed grains.
//
// Example:
//
//	d, err := vmdk.Open("disk.vmdk", vmdk.Options{})
//	...
//	for _, w := range d.Warnings() { log.Print(w) }
package vmdk
