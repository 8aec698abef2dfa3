// Package bucket serves a disk stored in an object store (an S3 bucket) as
// one object per chunk plus a small manifest, as s3backer does: Create
// makes a disk under a prefix, Open serves it as a sources.Source.
//
// Layout under PREFIX (which ends in "/", or is empty for the bucket's
// root): PREFIX+"manifest" (the disk's size, its object size and the
// format's version, JSON), PREFIX+"lease" (the writer's lock) and
// PREFIX+"chunks/%016x", the chunk with that index, holding the disk's
// bytes [index*ObjectSize, (index+1)*ObjectSize) (the last one shorter
// when the size is not a multiple). A chunk that was never written, or
// that is all zeros, is not stored and reads as zeros; trimming or zeroing
// a whole chunk deletes its object.
//
// Writes go to a write-back cache of whole chunks in memory (within
// Options.CacheSize), uploaded in the background by several goroutines at
// once; a write that would make one more chunk dirty waits while more are
// than the uploaders store in about ten seconds at their recent pace, so
// that a Flush, which returns once every write that completed before it
// is stored, returns well within the kernel's patience. A crash of the machine loses the writes since the last Flush,
// and nothing before it.
//
// One writer at a time: a read-write Open takes the disk's lease, an
// object written with a conditional request (If-None-Match: *, or If-Match
// the ETag of an expired lease) that names the holder (host, pid, device)
// and an expiry, and renews it while open. A second read-write Open is
// refused with a *HeldError naming the holder; read-only Opens take no
// lease. A Source that loses its lease (a renewal finds another holder,
// or cannot be made before the lease expires) stops writing and fails
// every request with EIO rather than overwrite another writer. Expiry is
// judged by the clocks of the machines involved, which must agree to
// within a fraction of Options.LeaseTTL (as NTP keeps them). The lease may
// go through a Store of its own (Options.LeaseStore: nbdloop gives it an
// S3 client of its own), so that renewals never wait for a connection
// behind uploads that hold all of the disk's.
//
// The object store is the Store interface (Get, Put with its conditions,
// Delete, List); NewS3Store implements it over an aws-sdk-go-v2 S3
// client, configured by the caller.
package bucket
