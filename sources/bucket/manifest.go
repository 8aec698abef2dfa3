package bucket

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/bits"
)

// The manifest's bounds. A manifest is read from the bucket, so every field
// is hostile: each is checked against these before anything is sized by it.
const (
	formatName    = "nbdloop-bucket"
	formatVersion = 1
	// manifestMax is the most bytes read of a manifest.
	manifestMax = 4096
	// MinObjectSize and MaxObjectSize bound the chunk size: a chunk is
	// held whole in memory.
	MinObjectSize = 4 << 10
	MaxObjectSize = 64 << 20
	// DefaultObjectSize is the chunk size Create uses when given 0.
	DefaultObjectSize = 4 << 20
	// MaxSize is the largest disk: a multiple of 512 below 2^63.
	MaxSize = (1<<63 - 1) &^ 511
)

// manifest is the disk's description, PREFIX+"manifest".
type manifest struct {
	Format     string `json:"format"`
	Version    int    `json:"version"`
	Size       int64  `json:"size"`
	ObjectSize int64  `json:"object_size"`
}

// encode returns the manifest's bytes.
func (m manifest) encode() []byte {
	b, _ := json.Marshal(m) // a struct of strings and numbers always marshals
	return append(b, '\n')
}

// decodeManifest parses and checks a manifest read from the bucket.
func decodeManifest(b []byte) (manifest, error) {
	var m manifest
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return m, fmt.Errorf("manifest is not valid: %v", err)
	}
	if m.Format != formatName {
		return m, fmt.Errorf("manifest's format is %.40q, not %q (not an nbdloop disk)", m.Format, formatName)
	}
	if m.Version != formatVersion {
		return m, fmt.Errorf("manifest's version %d is not %d (made by another nbdloop: use that one)", m.Version, formatVersion)
	}
	if err := checkGeometry(m.Size, m.ObjectSize); err != nil {
		return m, fmt.Errorf("manifest: %v", err)
	}
	return m, nil
}

// checkGeometry checks a disk's size and object size.
func checkGeometry(size, objectSize int64) error {
	if objectSize < MinObjectSize || objectSize > MaxObjectSize || bits.OnesCount64(uint64(objectSize)) != 1 {
		return fmt.Errorf("object size %d is not a power of 2 in %d..%d", objectSize, MinObjectSize, MaxObjectSize)
	}
	if size <= 0 || size > MaxSize || size%512 != 0 {
		return fmt.Errorf("size %d is not a multiple of 512 in 512..%d", size, int64(MaxSize))
	}
	return nil
}
