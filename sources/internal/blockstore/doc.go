// Package blockstore keeps the fetched blocks of one remote object in a
// file of a directory the user named (`--cache-dir`), so that they
// survive the end of the process: a restart of the server, a detach and a
// later attach of the same URL.
//
// One file per object, named by a hash of its location (the URL): a
// header that pins the version it holds (the object's pin, as httpsrc
// names it, and its size and block size), a table of one 16-byte record
// per slot (which block it holds, its length and its CRC-32C), and the
// slots, each one block. The slots hold at most Options.Limit bytes of
// blocks; when they are full, a new block takes the slot of one not read
// lately (a clock). A file whose header names another version, block size
// or slot count is emptied, never read: a changed object never reads old
// blocks.
//
// The files are hostile input: whoever can write the directory can write
// them. Open refuses a directory that others or its group may write or
// that belongs to another user, and opens the file beneath it by name
// with O_NOFOLLOW, creating it 0600; an existing file that is not a
// regular file of the user's with mode 0600 and one link is refused.
// Every block read back is checked against its record's CRC-32C (which
// covers the block's number too), and a block that fails is dropped and
// counted (Stats.Corrupt): the caller fetches it again. Records that name
// blocks outside the object, or with a wrong length, or twice, are
// ignored. The CRC finds a damaged file, not a forged one: someone who
// may write the file could write matching records, which is why the
// directory must be the user's alone.
//
// A file is used by one process at a time (an exclusive flock): Open
// waits a few seconds for another holder to end (a server handing over to
// the next), then fails with ErrBusy.
//
// Writes: a block is written to its slot first and its record after it,
// so that a crash between the two leaves a record whose CRC does not
// match and is dropped. A write that fails (a full disk) stops the
// store's writes; reads of what it holds go on.
package blockstore
