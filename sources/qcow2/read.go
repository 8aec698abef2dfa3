package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
	"github.com/nbdloop/nbdloop/sources"
)

// subclusters per cluster with extended L2 entries.
const subclusters = 32

// l2Table returns the L2 table at host offset off, from the cache or the
// file. Tables must be cluster-aligned and outside the header cluster.
func (im *Image) l2Table(off int64) (*table, error) {
	if off%im.cs != 0 || off < im.cs {
		return nil, fmt.Errorf("L2 table at unaligned offset %#x: %w", off, ErrCorrupt)
	}
	if t := im.l2.get(off); t != nil {
		return t, nil
	}
	data := make([]byte, im.cs)
	if err := preadFull(im.f, data, off); err != nil {
		return nil, fmt.Errorf("reading the L2 table at %#x: %w", off, err)
	}
	return im.l2.put(&table{off: off, data: data}, false), nil
}

// lookup returns the L2 entry of guest cluster ci and, with extended L2
// entries, its subcluster bitmap; 0, 0 when its L2 table is not allocated.
// The caller holds im.meta.
func (im *Image) lookup(ci int64) (entry, bitmap uint64, err error) {
	l1i := ci >> im.l2bits
	if l1i >= int64(len(im.l1)) {
		return 0, 0, fmt.Errorf("cluster %d is past the L1 table: %w", ci, ErrCorrupt)
	}
	l2off := int64(im.l1[l1i] & offsetMask)
	if l2off == 0 {
		return 0, 0, nil
	}
	t, err := im.l2Table(l2off)
	if err != nil {
		return 0, 0, err
	}
	i := (ci & (1<<im.l2bits - 1)) * im.h.l2EntryBytes
	entry = binary.BigEndian.Uint64(t.data[i:])
	if im.h.extendedL2 {
		bitmap = binary.BigEndian.Uint64(t.data[i+8:])
	}
	return entry, bitmap, nil
}

// fullData reports whether an L2 entry maps its whole cluster to host
// data at its offset: allocated, not compressed, not zero, every
// subcluster allocated.
func (im *Image) fullData(entry, bitmap uint64) bool {
	if entry&entryCompressed != 0 || entry&offsetMask == 0 {
		return false
	}
	if im.h.extendedL2 {
		return uint32(bitmap) == 0xffffffff && bitmap>>32 == 0
	}
	return im.h.version == 2 || entry&entryZero == 0
}

// ReadAt reads the image's virtual bytes. Reads of contiguous allocated
// clusters become one pread.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if err := sources.CheckRange(off, int64(len(p)), im.size); err != nil {
		return 0, err
	}
	im.meta.RLock()
	err := im.readAt(p, off)
	im.meta.RUnlock()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// readAt is ReadAt for callers that hold im.meta. It reads past the
// virtual size too (up to the end of the last cluster), which partial
// cluster writes need.
func (im *Image) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		ci := off >> im.cbits
		in := off & (im.cs - 1)
		n := min(int64(len(p)), im.cs-in)
		entry, bitmap, err := im.lookup(ci)
		if err != nil {
			return err
		}
		switch {
		case entry&entryCompressed != 0:
			if err := im.readCompressed(p[:n], entry, in); err != nil {
				return err
			}
		case im.fullData(entry, bitmap):
			host := int64(entry & offsetMask)
			if host%im.cs != 0 {
				return fmt.Errorf("data cluster at unaligned offset %#x: %w", host, ErrCorrupt)
			}
			// Coalesce the clusters that follow on the host too.
			for n < int64(len(p)) {
				e, b, err := im.lookup(ci + (in+n)>>im.cbits)
				if err != nil || !im.fullData(e, b) || int64(e&offsetMask) != host+in+n {
					break
				}
				n += min(int64(len(p))-n, im.cs)
			}
			if err := preadFull(im.f, p[:n], host+in); err != nil {
				return fmt.Errorf("reading the image: %w", err)
			}
		case im.h.extendedL2:
			if err := im.readSubclusters(p[:n], off, entry, bitmap); err != nil {
				return err
			}
		case im.h.version == 3 && entry&entryZero != 0:
			clear(p[:n])
		case entry&offsetMask == 0:
			if err := im.readBacking(p[:n], off); err != nil {
				return err
			}
		default:
			return fmt.Errorf("L2 entry %#x of cluster %d: %w", entry, ci, ErrCorrupt)
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readSubclusters reads part of one cluster whose extended L2 entry maps
// subclusters separately: allocated ones from the host cluster, zero ones
// as zeros, the others from the backing file.
func (im *Image) readSubclusters(p []byte, off int64, entry, bitmap uint64) error {
	alloc, zero := uint32(bitmap), uint32(bitmap>>32)
	if alloc&zero != 0 {
		return fmt.Errorf("subcluster both allocated and zero (bitmap %#x): %w", bitmap, ErrCorrupt)
	}
	host := int64(entry & offsetMask)
	if alloc != 0 && (host == 0 || host%im.cs != 0) {
		return fmt.Errorf("subclusters allocated at host offset %#x: %w", host, ErrCorrupt)
	}
	scs := im.cs / subclusters
	for len(p) > 0 {
		in := off & (im.cs - 1)
		sc := in / scs
		state := func(sc int64) int { return int(alloc>>sc&1) | int(zero>>sc&1)<<1 }
		s := state(sc)
		// The run of subclusters in the same state.
		end := (sc + 1) * scs
		for end < im.cs && state(end/scs) == s {
			end += scs
		}
		n := min(int64(len(p)), end-in)
		var err error
		switch s {
		case 1:
			err = preadFull(im.f, p[:n], host+in)
		case 2:
			clear(p[:n])
		default:
			err = im.readBacking(p[:n], off)
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readBacking reads from the backing file, or zeros where there is none
// or it ends.
func (im *Image) readBacking(p []byte, off int64) error {
	if im.backing == nil || off >= im.backingSize {
		clear(p)
		return nil
	}
	n := min(int64(len(p)), im.backingSize-off)
	if _, err := im.backing.ReadAt(p[:n], off); err != nil {
		return fmt.Errorf("reading the backing file: %w", err)
	}
	clear(p[n:])
	return nil
}

// compressedRange returns where a compressed cluster's bytes lie in the
// file, as qemu computes it (qcow2_parse_compressed_l2_entry): the sector
// count covers the first byte's sector, so the length is counted from its
// start.
func (im *Image) compressedRange(entry uint64) (off, n int64) {
	shift := 62 - (im.cbits - 8)
	off = int64(entry & (1<<shift - 1))
	sectors := int64(entry>>shift&(1<<(im.cbits-8)-1)) + 1
	return off, sectors*512 - off&511
}

// readCompressed copies part of a compressed cluster, decompressing it
// unless it is cached.
func (im *Image) readCompressed(p []byte, entry uint64, in int64) error {
	if im.ccache.read(entry, p, in) {
		return nil
	}
	coff, csize := im.compressedRange(entry)
	src := make([]byte, csize)
	if err := preadFull(im.f, src, coff); err != nil {
		return fmt.Errorf("reading a compressed cluster: %w", err)
	}
	dst := make([]byte, im.cs)
	if err := im.decompress(dst, src); err != nil {
		return fmt.Errorf("compressed cluster at %#x: %w", coff, err)
	}
	im.ccache.put(entry, dst)
	copy(p, dst[in:])
	return nil
}

// decompress fills dst (one cluster) from src, which may hold trailing
// bytes of the next compressed cluster.
func (im *Image) decompress(dst, src []byte) error {
	if im.h.compressionType == compressionZstd {
		n, err := zstdFrameLen(src)
		if err != nil {
			return err
		}
		out, err := im.zstd.DecodeAll(src[:n], dst[:0])
		if err != nil {
			return fmt.Errorf("zstd: %v: %w", err, ErrCorrupt)
		}
		if len(out) != len(dst) || &out[0] != &dst[0] {
			return fmt.Errorf("zstd frame decodes to %d bytes, not one cluster: %w", len(out), ErrCorrupt)
		}
		return nil
	}
	// qemu writes raw deflate with a 4 KiB window and stops reading once
	// the cluster is full: so do we, ignoring what follows.
	br := bytes.NewReader(src)
	var r io.ReadCloser
	if v := im.flates.Get(); v != nil {
		r = v.(io.ReadCloser)
		r.(flate.Resetter).Reset(br, nil)
	} else {
		r = flate.NewReader(br)
	}
	_, err := io.ReadFull(r, dst)
	im.flates.Put(r)
	if err != nil {
		return fmt.Errorf("deflate: %v: %w", err, ErrCorrupt)
	}
	return nil
}

// zstdFrameLen returns the length of the zstd frame at the start of b,
// walking its block headers: qemu's compressed clusters are followed by
// unrelated bytes up to the sector end, which DecodeAll would take for a
// second frame.
func zstdFrameLen(b []byte) (int, error) {
	var h zstd.Header
	if err := h.Decode(b); err != nil || h.Skippable {
		return 0, fmt.Errorf("no zstd frame: %w", ErrCorrupt)
	}
	pos := h.HeaderSize
	for {
		if pos+3 > len(b) {
			return 0, fmt.Errorf("zstd frame truncated: %w", ErrCorrupt)
		}
		bh := int(b[pos]) | int(b[pos+1])<<8 | int(b[pos+2])<<16
		pos += 3
		switch size := bh >> 3; bh >> 1 & 3 {
		case 0, 2: // raw, compressed
			pos += size
		case 1: // RLE
			pos++
		default:
			return 0, fmt.Errorf("zstd reserved block type: %w", ErrCorrupt)
		}
		if pos > len(b) {
			return 0, fmt.Errorf("zstd frame truncated: %w", ErrCorrupt)
		}
		if bh&1 != 0 {
			break
		}
	}
	if h.HasCheckSum {
		pos += 4
	}
	if pos > len(b) {
		return 0, fmt.Errorf("zstd frame truncated: %w", ErrCorrupt)
	}
	return pos, nil
}

// clusterCache keeps recently decompressed clusters, keyed by their L2
// entry, so that sequential reads through a compressed cluster decompress
// it once.
type clusterCache struct {
	mu   sync.Mutex
	max  int
	m    map[uint64][]byte
	fifo []uint64
}

func newClusterCache(max int) *clusterCache {
	return &clusterCache{max: max, m: make(map[uint64][]byte, max)}
}

func (c *clusterCache) read(entry uint64, p []byte, in int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.m[entry]
	if ok {
		copy(p, d[in:])
	}
	return ok
}

func (c *clusterCache) put(entry uint64, d []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[entry]; ok || c.max <= 0 {
		return
	}
	if len(c.fifo) >= c.max {
		delete(c.m, c.fifo[0])
		c.fifo = append(c.fifo[:0], c.fifo[1:]...)
	}
	c.m[entry] = d
	c.fifo = append(c.fifo, entry)
}

func (c *clusterCache) drop(entry uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[entry]; !ok {
		return
	}
	delete(c.m, entry)
	for i, e := range c.fifo {
		if e == entry {
			c.fifo = append(c.fifo[:i], c.fifo[i+1:]...)
			break
		}
	}
}

// preadFull fills p from f at off; bytes past the end of the file read as
// zeros, as qemu's file driver pads short reads.
func preadFull(f io.ReaderAt, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := f.ReadAt(p, off)
		p, off = p[n:], off+int64(n)
		if errors.Is(err, io.EOF) {
			clear(p)
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}
