package bucket

import (
	"context"
	"errors"
)

// Store is the object store a disk lives in: a flat namespace of keys in
// one bucket. Implementations must be safe for concurrent use.
type Store interface {
	// Get reads the whole object key into p and returns its length and
	// ETag. An object longer than p is an error (ErrTooLarge), never a
	// larger allocation; a missing one is ErrNotFound.
	Get(ctx context.Context, key string, p []byte) (n int, etag string, err error)
	// Put stores data as the object key, under cond, and returns the new
	// ETag. A condition that does not hold is ErrPrecondition.
	Put(ctx context.Context, key string, data []byte, cond Cond) (etag string, err error)
	// Delete removes the object key; a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn with each key that starts with prefix, in order,
	// until fn returns false.
	List(ctx context.Context, prefix string, fn func(key string) bool) error
}

// Cond is the condition of a Put. The zero Cond always holds.
type Cond struct {
	// IfNoneMatch: the object must not exist (If-None-Match: *).
	IfNoneMatch bool
	// IfMatch, when set, is the ETag the object must have (If-Match).
	IfMatch string
}

// Errors a Store returns, wrapped, for the cases callers branch on.
var (
	ErrNotFound     = errors.New("no such object")
	ErrPrecondition = errors.New("precondition failed: the object changed")
	ErrTooLarge     = errors.New("object is larger than expected")
)
