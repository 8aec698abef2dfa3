package bucket

import (
	"context"
	"errors"
	"fmt"
)

// ErrExists is Create's refusal of a prefix that holds a disk, or chunks
// of one.
var ErrExists = errors.New("a disk exists there")

// Create makes an empty disk of size bytes under prefix, in chunks of
// objectSize bytes (0: DefaultObjectSize). It refuses (ErrExists) a prefix
// that holds a manifest or chunk objects, which would show through the
// new disk; the manifest is written with If-None-Match: *, so of two
// Creates at once one fails.
func Create(ctx context.Context, store Store, prefix string, size, objectSize int64) error {
	if objectSize == 0 {
		objectSize = DefaultObjectSize
	}
	if err := checkGeometry(size, objectSize); err != nil {
		return err
	}
	found := ""
	if err := store.List(ctx, prefix+"chunks/", func(key string) bool { found = key; return false }); err != nil {
		return err
	}
	if found != "" {
		return fmt.Errorf("%w: chunk objects such as %s are there (delete them, or choose another prefix)", ErrExists, found)
	}
	m := manifest{Format: formatName, Version: formatVersion, Size: size, ObjectSize: objectSize}
	_, err := store.Put(ctx, prefix+"manifest", m.encode(), Cond{IfNoneMatch: true})
	if errors.Is(err, ErrPrecondition) {
		return fmt.Errorf("%w: %smanifest is there (attach it, or choose another prefix)", ErrExists, prefix)
	}
	return err
}
