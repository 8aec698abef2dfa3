package blockstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"golang.org/x/sys/unix"
)

// The file: a header of headerSize bytes, a table of one record per slot,
// then the slots from dataOff, each BlockSize bytes.
//
//	header: magic (8) | location hash (32) | size (8) | block size (8) |
//	        slots (8) | pin length (2) | pin (up to MaxPin) | ... |
//	        CRC-32C of the bytes before it (4, at headerSize-4)
//	record: block+1 (8, 0 for none) | length (4) | CRC-32C (4)
const (
	headerSize = 4096
	recordSize = 16
	pinAt      = 66
)

var (
	magic = [8]byte{'N', 'B', 'D', 'L', 'B', 'L', 'K', '1'}
	table = crc32.MakeTable(crc32.Castagnoli)
)

// header returns the header of the version opts describe.
func (s *Store) header(pin string, loc [32]byte) []byte {
	h := make([]byte, headerSize)
	copy(h, magic[:])
	copy(h[8:], loc[:])
	binary.LittleEndian.PutUint64(h[40:], uint64(s.size))
	binary.LittleEndian.PutUint64(h[48:], uint64(s.bs))
	binary.LittleEndian.PutUint64(h[56:], uint64(len(s.slots)))
	binary.LittleEndian.PutUint16(h[64:], uint16(len(pin)))
	copy(h[pinAt:], pin)
	binary.LittleEndian.PutUint32(h[headerSize-4:], crc32.Checksum(h[:headerSize-4], table))
	return h
}

// load reads the file's table if its header is the one of this version,
// and empties the file otherwise.
func (s *Store) load(pin string, loc [32]byte) error {
	want := s.header(pin, loc)
	got := make([]byte, headerSize)
	n, err := s.f.ReadAt(got, 0)
	if err != nil && err != io.EOF {
		return fmt.Errorf("cache file %s: reading the header: %w", s.name, err)
	}
	if n == headerSize && bytes.Equal(got, want) {
		return s.loadTable()
	}
	return s.reset(want)
}

// reset empties the file and writes the header: every slot free.
func (s *Store) reset(h []byte) error {
	if err := s.f.Truncate(0); err != nil {
		return fmt.Errorf("cache file %s: emptying it: %w", s.name, err)
	}
	if err := s.f.Truncate(s.dataOff); err != nil {
		return fmt.Errorf("cache file %s: sizing it: %w", s.name, err)
	}
	if _, err := s.f.WriteAt(h, 0); err != nil {
		return fmt.Errorf("cache file %s: writing the header: %w", s.name, err)
	}
	for i := len(s.slots) - 1; i >= 0; i-- {
		s.free = append(s.free, int32(i))
	}
	return nil
}

// loadTable reads the records: a record that names a block outside the
// object, with another length, or a block already held, is ignored.
func (s *Store) loadTable() error {
	raw := make([]byte, recordSize*len(s.slots))
	n, err := s.f.ReadAt(raw, headerSize)
	if err != nil && err != io.EOF {
		return fmt.Errorf("cache file %s: reading the table: %w", s.name, err)
	}
	raw = raw[:n]
	defer func() {
		for i := len(s.slots) - 1; i >= 0; i-- {
			if s.slots[i].block < 0 {
				s.free = append(s.free, int32(i))
			}
		}
	}()
	for i := range len(raw) / recordSize {
		r := raw[i*recordSize:]
		b := int64(binary.LittleEndian.Uint64(r)) - 1
		ln := binary.LittleEndian.Uint32(r[8:])
		if b < 0 || b >= s.nblocks || int64(ln) != s.blockLen(b) {
			continue
		}
		if _, dup := s.slotOf[b]; dup {
			continue
		}
		s.slots[i] = slot{block: b, n: ln, crc: binary.LittleEndian.Uint32(r[12:])}
		s.slotOf[b] = int32(i)
	}
	return nil
}

// record encodes slot i's record into r.
func record(r *[recordSize]byte, block int64, n, crc uint32) {
	binary.LittleEndian.PutUint64(r[:], uint64(block+1))
	binary.LittleEndian.PutUint32(r[8:], n)
	binary.LittleEndian.PutUint32(r[12:], crc)
}

// Sum returns the CRC-32C a block's record holds: over the block's
// number, then its bytes.
func Sum(block int64, data []byte) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(block))
	return crc32.Update(crc32.Checksum(b[:], table), table, data)
}

// Update continues a Sum over more of the block's bytes.
func Update(crc uint32, data []byte) uint32 { return crc32.Update(crc, table, data) }

// Version is what a file says of the object version it holds.
type Version struct {
	Pin       string
	Size      int64
	BlockSize int64
}

// Cached returns the version of the object at location whose blocks the
// file in dir holds, for serving them while the object's server does not
// answer; ok is false when there is no such file or its header is not
// whole. The directory and the file are checked as Open checks them.
func Cached(dir, location string) (v Version, ok bool, err error) {
	d, err := openDir(dir)
	if err != nil {
		return Version{}, false, err
	}
	defer unix.Close(d)
	sum := sha256.Sum256([]byte(location))
	f, err := openFile(d, dir, fileName(sum), 0)
	if errors.Is(err, unix.ENOENT) {
		return Version{}, false, nil
	}
	if err != nil {
		return Version{}, false, err
	}
	defer f.Close()
	h := make([]byte, headerSize)
	if _, err := f.ReadAt(h, 0); err != nil {
		return Version{}, false, nil
	}
	return parseHeader(h, sum)
}

// parseHeader returns the version a header names, if it is whole and
// names location's hash sum.
func parseHeader(h []byte, sum [32]byte) (Version, bool, error) {
	if len(h) != headerSize || !bytes.Equal(h[:8], magic[:]) || !bytes.Equal(h[8:40], sum[:]) ||
		binary.LittleEndian.Uint32(h[headerSize-4:]) != crc32.Checksum(h[:headerSize-4], table) {
		return Version{}, false, nil
	}
	v := Version{Size: int64(binary.LittleEndian.Uint64(h[40:])), BlockSize: int64(binary.LittleEndian.Uint64(h[48:]))}
	n := int(binary.LittleEndian.Uint16(h[64:]))
	if v.Size <= 0 || v.BlockSize <= 0 || v.BlockSize > maxBlock || n > MaxPin {
		return Version{}, false, nil
	}
	v.Pin = string(h[pinAt : pinAt+n])
	return v, true, nil
}
