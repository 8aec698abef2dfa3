package gzip

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The checkpoint index of a gzip file can be kept in a cache directory, so
// that the next Open of the same file needs no inflating pass. The file is
// found by a key computed from the gzip file's size and its first and last
// 64 KiB; each segment's compressed bytes are checked against the CRC32 the
// index records before they are decoded, so an index that no longer fits
// its file fails reads instead of serving wrong data.

const (
	indexMagic   = "nbdloop gzip index 1\n"
	keyBytes     = 64 << 10
	maxIndexFile = 512 << 20
)

// fileKey identifies a gzip file's contents cheaply.
func fileKey(r io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	binary.Write(h, binary.LittleEndian, size)
	for _, off := range []int64{0, max(0, size-keyBytes)} {
		if _, err := io.Copy(h, io.NewSectionReader(r, off, min(keyBytes, size))); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

func indexPath(dir, key string) string { return filepath.Join(dir, "gzip-index", key+".idx") }

// marshal encodes the index for a file of fileSize bytes.
func (ix *index) marshal(fileSize int64) []byte {
	var b bytes.Buffer
	b.WriteString(indexMagic)
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	w(fileSize)
	w(ix.size)
	w(uint32(ix.members))
	w(ix.garbage)
	w(uint32(len(ix.cps)))
	for _, cp := range ix.cps {
		w(cp.uoff)
		w(cp.coff)
		w(cp.bit)
		w(cp.crc)
		w(cp.memberEnd)
		w(uint32(len(cp.window)))
		b.Write(cp.window)
	}
	w(crc32.ChecksumIEEE(b.Bytes()))
	return b.Bytes()
}

var errBadIndex = errors.New("gzip index file is damaged")

// unmarshalIndex decodes an index file and checks it against a gzip file
// of fileSize bytes: every field is range-checked, so a damaged or hostile
// index file cannot make reads go outside the file or allocate more than
// its own size.
func unmarshalIndex(data []byte, fileSize int64) (*index, error) {
	if len(data) < len(indexMagic)+4 || !bytes.HasPrefix(data, []byte(indexMagic)) {
		return nil, errBadIndex
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, errBadIndex
	}
	r := bytes.NewReader(body[len(indexMagic):])
	rd := func(v any) error { return binary.Read(r, binary.LittleEndian, v) }
	var fsize, size, garbage int64
	var members, n uint32
	for _, v := range []any{&fsize, &size, &members, &garbage, &n} {
		if err := rd(v); err != nil {
			return nil, errBadIndex
		}
	}
	if fsize != fileSize || size <= 0 || garbage < 0 || garbage > fileSize || members == 0 {
		return nil, errBadIndex
	}
	const minEntry = 8 + 8 + 1 + 4 + 8 + 4
	if n == 0 || int64(n) > int64(r.Len())/minEntry {
		return nil, errBadIndex
	}
	ix := &index{size: size, members: int(members), garbage: garbage, cps: make([]checkpoint, n)}
	for i := range ix.cps {
		cp := &ix.cps[i]
		var wlen uint32
		for _, v := range []any{&cp.uoff, &cp.coff, &cp.bit, &cp.crc, &cp.memberEnd, &wlen} {
			if err := rd(v); err != nil {
				return nil, errBadIndex
			}
		}
		if int64(wlen) > int64(r.Len()) {
			return nil, errBadIndex
		}
		if wlen > 0 {
			cp.window = make([]byte, wlen)
			r.Read(cp.window)
		}
		prevU := int64(-1)
		if i > 0 {
			prevU = ix.cps[i-1].uoff
		}
		if cp.uoff <= prevU || cp.uoff >= size || cp.bit > 7 || cp.coff < 0 || cp.coff >= cp.memberEnd || cp.memberEnd > fileSize {
			return nil, errBadIndex
		}
	}
	if r.Len() != 0 || ix.cps[0].uoff != 0 {
		return nil, errBadIndex
	}
	return ix, nil
}

// loadIndex returns the index kept for key, or nil.
func loadIndex(dir, key string, fileSize int64) *index {
	if dir == "" {
		return nil
	}
	f, err := os.Open(indexPath(dir, key))
	if err != nil {
		return nil
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIndexFile))
	if err != nil {
		return nil
	}
	ix, err := unmarshalIndex(data, fileSize)
	if err != nil {
		return nil
	}
	return ix
}

// saveIndex writes the index atomically (a temporary file, then rename).
func saveIndex(dir, key string, ix *index, fileSize int64) error {
	path := indexPath(dir, key)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), key+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(ix.marshal(fileSize))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("saving the gzip index: %w", err)
	}
	return nil
}
