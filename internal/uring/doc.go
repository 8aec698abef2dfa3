// Package uring is the small part of Linux io_uring that a ublk server
// needs, set up with system calls and mmap alone: a ring with 128-byte
// submission entries and 32-byte completion entries (IORING_SETUP_SQE128
// and IORING_SETUP_CQE32, which ublk's control commands require), getting
// and filling submission entries (IORING_OP_URING_CMD, IORING_OP_POLL_ADD,
// IORING_OP_NOP), submitting them and waiting for completions, and reading
// completions in place.
//
// A Ring is used by one goroutine at a time; ublk wants all commands of a
// queue from one thread, so its user locks the goroutine to its thread.
// Nothing here allocates after New: entries are read and written where the
// kernel maps them.
package uring
