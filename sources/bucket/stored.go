package bucket

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// maxBitmapChunks bounds the bitmap of stored chunks (16 MiB); a disk of
// more chunks is served without one.
const maxBitmapChunks = 1 << 27

// storedSet records which chunks have an object, for the one writer: a
// chunk without one reads as zeros without a GET, and trimming it needs
// no DELETE. Readers have none, since the writer changes the store under
// them. A nil storedSet knows nothing.
type storedSet []uint64

// listStored lists the chunk objects under prefix into a storedSet for a
// disk of n chunks; nil when n is too large to track. Keys that are not
// chunks of the disk are ignored.
func listStored(ctx context.Context, store Store, prefix string, n int64) (storedSet, error) {
	if n > maxBitmapChunks {
		return nil, nil
	}
	set := make(storedSet, (n+63)/64)
	dir := prefix + "chunks/"
	err := store.List(ctx, dir, func(key string) bool {
		name := strings.TrimPrefix(key, dir)
		if len(name) != 16 {
			return true
		}
		if idx, err := strconv.ParseUint(name, 16, 63); err == nil && int64(idx) < n {
			set.set(int64(idx), true)
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("listing the chunks: %w", err)
	}
	return set, nil
}

// has reports whether chunk idx may have an object: true when unknown.
func (s storedSet) has(idx int64) bool {
	return s == nil || s[idx/64]&(1<<(idx%64)) != 0
}

// set records whether chunk idx has an object.
func (s storedSet) set(idx int64, on bool) {
	if s == nil {
		return
	}
	if on {
		s[idx/64] |= 1 << (idx % 64)
	} else {
		s[idx/64] &^= 1 << (idx % 64)
	}
}
