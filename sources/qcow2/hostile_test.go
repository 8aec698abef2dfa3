package qcow2

import (
	"encoding/binary"
	"testing"
)

// spec describes an image that build lays out byte by byte, so that a
// test can give any header field any value: header and extensions in
// cluster 0, the refcount table in cluster 1, one refcount block in
// cluster 2, the L1 table from cluster 3 on, nothing allocated (every
// cluster reads from the backing file, or as zeros).
type spec struct {
	clusterBits uint32 // 0: 16
	size        uint64 // 0: 1 MiB
	backing     string
	backingFmt  string
	// patch changes the built bytes (the header's hostile fields).
	patch func(b []byte)
}

// Header field offsets, for patches.
const (
	hBackingOffset = 8
	hBackingSize   = 16
	hClusterBits   = 20
	hSize          = 24
	hL1Size        = 36
	hL1Offset      = 40
	hRefOffset     = 48
	hRefClusters   = 56
	hNbSnapshots   = 60
	hSnapOffset    = 64
	hIncompatible  = 72
	hRefOrder      = 96
	hHeaderLength  = 100
)

func (s spec) build() []byte {
	cb := s.clusterBits
	if cb == 0 {
		cb = 16
	}
	size := s.size
	if size == 0 {
		size = 1 << 20
	}
	cs := uint64(1) << cb
	l2Entries := cs / 8
	l1Size := max(1, ((size+cs-1)/cs+l2Entries-1)/l2Entries)
	l1Clusters := (l1Size*8 + cs - 1) / cs
	b := make([]byte, (3+l1Clusters)*cs)
	be := binary.BigEndian
	be.PutUint32(b[0:], magic)
	be.PutUint32(b[4:], 3)
	be.PutUint32(b[hClusterBits:], cb)
	be.PutUint64(b[hSize:], size)
	be.PutUint32(b[hL1Size:], uint32(l1Size))
	be.PutUint64(b[hL1Offset:], 3*cs)
	be.PutUint64(b[hRefOffset:], cs)
	be.PutUint32(b[hRefClusters:], 1)
	be.PutUint32(b[hRefOrder:], 4)
	be.PutUint32(b[hHeaderLength:], v3HeaderLen)
	off := uint64(v3HeaderLen)
	if s.backingFmt != "" {
		be.PutUint32(b[off:], extBackingFmt)
		be.PutUint32(b[off+4:], uint32(len(s.backingFmt)))
		copy(b[off+8:], s.backingFmt)
		off += 8 + (uint64(len(s.backingFmt))+7)&^7
	}
	off += 8 // end of extensions
	if s.backing != "" {
		be.PutUint64(b[hBackingOffset:], off)
		be.PutUint32(b[hBackingSize:], uint32(len(s.backing)))
		copy(b[off:], s.backing)
	}
	be.PutUint64(b[cs:], 2*cs)
	for c := range 3 + l1Clusters {
		be.PutUint16(b[2*cs+2*c:], 1)
	}
	if s.patch != nil {
		s.patch(b)
	}
	return b
}

func TestOverflowRepro(t *testing.T) {
	b := spec{backing: "base.raw", patch: func(b []byte) {
		binary.BigEndian.PutUint64(b[hBackingOffset:], 0xFFFFFFFFFFFFFFF0)
		binary.BigEndian.PutUint32(b[hBackingSize:], 0x20)
	}}.build()
	_, err := parseHeader(b, int64(len(b)))
	t.Log(err)
}
