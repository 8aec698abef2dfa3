// Package ublk serves a sources.Source as a Linux ublk block device,
// /dev/ublkbN: the kernel's userspace block driver (ublk_drv, 6.0+), driven
// through io_uring commands (internal/uring) instead of a socket.
//
// # Control plane
//
// Control (control.go) sends the commands of /dev/ublk-control, each an
// IORING_OP_URING_CMD whose 32-byte ublksrv_ctrl_cmd is built by a pure
// function (uapi.go, tested against golden bytes): ADD_DEV creates the
// device and its character device /dev/ublkcN, SET_PARAMS gives it its
// size, block sizes, request size, cache, discard and write-zeroes limits,
// START_DEV adds /dev/ublkbN once every queue has fetched, STOP_DEV removes
// it and DEL_DEV frees the numbers.
//
// # Data plane
//
// A Device (device.go) runs one queue (queue.go) per CPU, each on a
// goroutine locked to its thread (ublk takes every command of a queue from
// one task) with a ring of its own. A queue maps its request descriptors
// from /dev/ublkcN and one buffer per tag; it sends FETCH_REQ for every
// tag, and for each request the kernel hands back it calls the Source
// (handle.go) and answers with COMMIT_AND_FETCH_REQ, which also fetches
// the tag's next request. The kernel copies a write's data into the tag's
// buffer before handing it over and a read's out of it after the commit.
// A Source in a RAM file (a memory: disk's memfd, a file on tmpfs:
// sources.File's RAMRegion) is served with user copy instead where the
// driver has it (UBLK_F_USER_COPY, Linux 6.5+; ram.go): the commands carry
// no buffer, and the server has the kernel copy a read's data straight
// from a shared mapping of the file (pwrite on /dev/ublkcN at the
// request's position) and a write's straight into it (pread; where the
// Source offers RAMWriteRegion: a memory: disk, a probed raw image past
// the first 4 KiB its guard checks), one copy instead of two; requests
// up to 1 MiB. Its other requests go through the tag's buffer with a
// pread or pwrite of their own.
// A Source in memory is served on the queue's thread (but for the large
// requests of a batch under user copy, whose copies the workers spread
// over the CPUs); one that may block is served by the queue's workers
// (workers.go), whose finished tags the thread commits when their eventfd
// wakes its ring. Nothing is allocated
// per request.
//
// Recovery: a device added with Options.Recovery outlives its server: the
// kernel holds its I/O when the server dies (or Abandons it), and Recover,
// in the next server, takes it over (START_USER_RECOVERY, fetches,
// END_USER_RECOVERY); requests the dead server had are sent again.
//
// Flush, discard and write-zeroes become Source.Flush, Trim and Zero (with
// UBLK_IO_F_NOUNMAP: Zero without trimming); a FUA write is a write
// followed by Flush.
//
// Stopping: STOP_DEV first (the kernel waits for the requests in flight,
// which the queues still serve), then an eventfd the queues poll wakes them,
// they close their rings (the kernel cancels the fetches), and DEL_DEV.
package ublk
