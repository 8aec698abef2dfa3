// Package clockcache is the table cache of the image formats: a bounded
// map from keys (a table's file offset or number) to values (its bytes)
// with CLOCK, or second-chance, eviction. vmdk keeps its grain tables and
// inflated grains in one, qcow2 its L2 tables and refcount blocks.
//
// A hit (Get) costs a map lookup and sets the entry's reference bit; a miss
// claims a slot with Insert and fills the value it points to. When the cache
// is full, the clock hand sweeps the slots: a referenced entry loses its bit
// and is passed over, the first unreferenced one is evicted. Nothing is
// allocated once the slots exist, and a value is left in its slot when its
// entry is evicted (or removed), so the next entry in that slot can reuse
// it: a buffer of a table's size, say.
//
// Memory: slots are created on first use, up to the limit given to New. The
// first slot is always created; each further one only if grow (when not
// nil) agrees, which is where a caller charges a memory budget slot by slot
// (vmdk). Once grow refuses, the cache stops growing and evicts instead. A
// caller that paid for the whole limit up front passes nil (qcow2).
//
// Write-back: SetDirty marks an entry whose value holds changes not yet
// written; dirty entries are never evicted. When every entry is dirty,
// Insert goes past the limit rather than fail, and the cache returns to the
// limit as entries are cleaned and evicted; keeping few entries dirty
// (writing them back, see AppendDirty) is the caller's job.
//
// Locking: a Cache is not safe for concurrent use; its owner serializes
// every call, with a mutex of its own (qcow2) or the lock that guards the
// tables (vmdk). A pointer returned by Get, Peek or Insert is valid until
// the next Insert or Remove.
package clockcache
