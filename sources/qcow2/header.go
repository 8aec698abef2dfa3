package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// Header field offsets and constants of docs/interop/qcow2.txt (qemu).
const (
	magic = 0x514649fb // "QFI\xfb"

	v2HeaderLen = 72
	v3HeaderLen = 104

	minClusterBits = 9
	maxClusterBits = 21 // 2 MiB, qemu's limit

	// Limits taken from qemu (QCOW_MAX_L1_SIZE, QCOW_MAX_REFTABLE_SIZE,
	// QCOW_MAX_SNAPSHOTS): tables larger than this are refused, so that no
	// header field sizes an allocation without a cap.
	maxL1Bytes       = 32 << 20
	maxRefTableBytes = 8 << 20
	maxSnapshots     = 65536
	maxBackingName   = 1023
	maxBackingFormat = 15

	// Largest virtual size accepted: 2^62 keeps every offset computation
	// far from overflow (qemu's own limit comes from the L1 table size).
	maxVirtualSize = 1 << 62

	// incompatible_features bits
	incDirty        = 1 << 0
	incCorrupt      = 1 << 1
	incExternalData = 1 << 2
	incCompression  = 1 << 3
	incExtendedL2   = 1 << 4
	incKnown        = incDirty | incCorrupt | incExternalData | incCompression | incExtendedL2

	// header extension types
	extEnd          = 0x00000000
	extBackingFmt   = 0xe2792aca
	extFeatureNames = 0x6803f857
	extExternalData = 0x44415441

	// Compression types (header byte 104).
	compressionZlib = 0
	compressionZstd = 1

	// Header byte offsets that are rewritten in place.
	offRefTable     = 48 // refcount_table_offset (u64) + refcount_table_clusters (u32)
	offIncompatible = 72
	offAutoclear    = 88
)

// L1/L2 entry bits.
const (
	entryCopied     = uint64(1) << 63
	entryCompressed = uint64(1) << 62
	entryZero       = uint64(1) << 0
	offsetMask      = uint64(0x00fffffffffffe00) // bits 9..55
)

// ErrCorrupt is wrapped by errors about inconsistent metadata met while
// serving (a table entry that points nowhere sensible). It wraps EIO.
var ErrCorrupt = fmt.Errorf("qcow2 metadata is corrupt: %w", syscall.EIO)

// ErrUnsupported is wrapped by errors about images that use a feature this
// package does not implement (encryption, external data files, unknown
// incompatible features).
var ErrUnsupported = errors.New("unsupported qcow2 feature")

// header is the parsed image header, extensions included.
type header struct {
	version          uint32
	backingOffset    uint64
	backingSize      uint32
	clusterBits      uint32
	size             uint64
	cryptMethod      uint32
	l1Size           uint32
	l1Offset         uint64
	refTableOffset   uint64
	refTableClusters uint32
	nbSnapshots      uint32
	snapshotsOffset  uint64
	incompatible     uint64
	compatible       uint64
	autoclear        uint64
	refcountOrder    uint32
	headerLength     uint32
	compressionType  uint8
	backingFile      string
	backingFormat    string
	featureNames     map[[2]byte]string // (type, bit) -> name
	extendedL2       bool
	l2EntryBytes     int64 // 8, or 16 with extended L2
	l2Entries        int64 // entries per L2 table
	externalDataName string
}

func (h *header) clusterSize() int64 { return 1 << h.clusterBits }

// parseHeader parses cluster 0 of an image (or as much of it as the file
// holds: b may be shorter than a cluster) of a file of fileSize bytes. It
// checks every field against the file and against fixed caps, so that
// callers can allocate tables sized by the header without further checks.
func parseHeader(b []byte, fileSize int64) (*header, error) {
	if len(b) < v2HeaderLen {
		return nil, fmt.Errorf("file of %d bytes is too short for a qcow2 header", len(b))
	}
	be := binary.BigEndian
	if be.Uint32(b) != magic {
		return nil, errors.New("no qcow2 magic")
	}
	h := &header{
		version:          be.Uint32(b[4:]),
		backingOffset:    be.Uint64(b[8:]),
		backingSize:      be.Uint32(b[16:]),
		clusterBits:      be.Uint32(b[20:]),
		size:             be.Uint64(b[24:]),
		cryptMethod:      be.Uint32(b[32:]),
		l1Size:           be.Uint32(b[36:]),
		l1Offset:         be.Uint64(b[40:]),
		refTableOffset:   be.Uint64(b[48:]),
		refTableClusters: be.Uint32(b[56:]),
		nbSnapshots:      be.Uint32(b[60:]),
		snapshotsOffset:  be.Uint64(b[64:]),
		refcountOrder:    4,
		headerLength:     v2HeaderLen,
	}
	switch h.version {
	case 2:
	case 3:
		if len(b) < v3HeaderLen {
			return nil, fmt.Errorf("file of %d bytes is too short for a qcow2 v3 header", len(b))
		}
		h.incompatible = be.Uint64(b[72:])
		h.compatible = be.Uint64(b[80:])
		h.autoclear = be.Uint64(b[88:])
		h.refcountOrder = be.Uint32(b[96:])
		h.headerLength = be.Uint32(b[100:])
	default:
		return nil, fmt.Errorf("qcow2 version %d: %w (versions 2 and 3 are)", h.version, ErrUnsupported)
	}
	if h.clusterBits < minClusterBits || h.clusterBits > maxClusterBits {
		return nil, fmt.Errorf("cluster_bits %d is outside %d..%d", h.clusterBits, minClusterBits, maxClusterBits)
	}
	cs := h.clusterSize()
	if h.version == 3 {
		if h.headerLength < v3HeaderLen || int64(h.headerLength) > cs || h.headerLength%8 != 0 {
			return nil, fmt.Errorf("header_length %d is not a multiple of 8 in %d..%d", h.headerLength, v3HeaderLen, cs)
		}
		if int64(len(b)) < int64(h.headerLength) {
			return nil, fmt.Errorf("header_length %d is past the end of the file", h.headerLength)
		}
	}
	if h.refcountOrder > 6 {
		return nil, fmt.Errorf("refcount_order %d is above 6", h.refcountOrder)
	}
	if h.cryptMethod != 0 {
		return nil, fmt.Errorf("encrypted image (crypt_method %d): %w (decrypt it: qemu-img convert -O qcow2 --object secret,... --image-opts ...)", h.cryptMethod, ErrUnsupported)
	}
	if h.size > maxVirtualSize {
		return nil, fmt.Errorf("virtual size %d is above 2^62", h.size)
	}

	h.extendedL2 = h.incompatible&incExtendedL2 != 0
	h.l2EntryBytes = 8
	if h.extendedL2 {
		h.l2EntryBytes = 16
		if h.clusterBits < 14 {
			return nil, fmt.Errorf("extended L2 entries need clusters of 16 KiB or more, not %d bytes", cs)
		}
	}
	h.l2Entries = cs / h.l2EntryBytes
	if h.incompatible&incCompression != 0 {
		if h.headerLength < v3HeaderLen+8 {
			return nil, fmt.Errorf("compression type bit set but header_length %d has no room for it", h.headerLength)
		}
		h.compressionType = b[104]
		if h.compressionType != compressionZlib && h.compressionType != compressionZstd {
			return nil, fmt.Errorf("compression type %d: %w (zlib and zstd are)", h.compressionType, ErrUnsupported)
		}
	} else if h.headerLength > v3HeaderLen && b[104] != 0 {
		return nil, fmt.Errorf("compression type %d without the compression type feature bit", b[104])
	}

	// Tables: aligned, of capped size, inside the file.
	clusters := (h.size + uint64(cs) - 1) >> h.clusterBits
	needL1 := (clusters + uint64(h.l2Entries) - 1) / uint64(h.l2Entries)
	if uint64(h.l1Size) < needL1 {
		return nil, fmt.Errorf("L1 table of %d entries is too small for %d bytes (%d needed)", h.l1Size, h.size, needL1)
	}
	if uint64(h.l1Size)*8 > maxL1Bytes {
		return nil, fmt.Errorf("L1 table of %d entries is larger than %d MiB", h.l1Size, maxL1Bytes>>20)
	}
	if err := checkTable("L1 table", h.l1Offset, uint64(h.l1Size)*8, cs, fileSize); err != nil {
		return nil, err
	}
	if h.refTableClusters == 0 || uint64(h.refTableClusters)<<h.clusterBits > maxRefTableBytes {
		return nil, fmt.Errorf("refcount table of %d clusters is empty or larger than %d MiB", h.refTableClusters, maxRefTableBytes>>20)
	}
	if err := checkTable("refcount table", h.refTableOffset, uint64(h.refTableClusters)<<h.clusterBits, cs, fileSize); err != nil {
		return nil, err
	}
	if h.nbSnapshots > maxSnapshots {
		return nil, fmt.Errorf("%d snapshots, more than %d", h.nbSnapshots, maxSnapshots)
	}
	if h.nbSnapshots > 0 && (h.snapshotsOffset%uint64(cs) != 0 || h.snapshotsOffset >= uint64(fileSize)) {
		return nil, fmt.Errorf("snapshot table offset %d is unaligned or past the end of the file", h.snapshotsOffset)
	}

	// The backing file name lives in cluster 0, after the extensions.
	if h.backingOffset != 0 {
		if h.backingSize == 0 || h.backingSize > maxBackingName {
			return nil, fmt.Errorf("backing file name length %d is outside 1..%d", h.backingSize, maxBackingName)
		}
		// Compared without adding: offset+size may wrap around.
		area := uint64(min(cs, int64(len(b))))
		if h.backingOffset > area || uint64(h.backingSize) > area-h.backingOffset {
			return nil, fmt.Errorf("backing file name at %d+%d lies outside the first cluster (%d bytes)", h.backingOffset, h.backingSize, area)
		}
		h.backingFile = string(b[h.backingOffset : h.backingOffset+uint64(h.backingSize)])
	}

	if err := h.parseExtensions(b); err != nil {
		return nil, err
	}

	if unknown := h.incompatible &^ incKnown; unknown != 0 {
		return nil, fmt.Errorf("incompatible features %s: %w", h.featureList(0, unknown), ErrUnsupported)
	}
	if h.incompatible&incExternalData != 0 {
		return nil, fmt.Errorf("external data file %q: %w (convert the image: qemu-img convert -O qcow2 IMAGE NEW.qcow2)", h.externalDataName, ErrUnsupported)
	}
	return h, nil
}

// checkTable checks that a table of n bytes at off is cluster-aligned and
// lies inside the file.
func checkTable(what string, off, n uint64, cs, fileSize int64) error {
	if off == 0 || off%uint64(cs) != 0 {
		return fmt.Errorf("%s offset %d is not a non-zero multiple of the cluster size %d", what, off, cs)
	}
	if off > uint64(fileSize) || n > uint64(fileSize)-off {
		return fmt.Errorf("%s at %d+%d lies past the end of the %d-byte file", what, off, n, fileSize)
	}
	return nil
}

// parseExtensions walks the header extensions that follow the header
// (v3: at header_length; v2: at 72), up to the backing file name or the end
// of cluster 0. Each step consumes at least 8 bytes, so the walk ends.
func (h *header) parseExtensions(b []byte) error {
	be := binary.BigEndian
	end := int64(len(b))
	if h.backingOffset != 0 && int64(h.backingOffset) < end {
		end = int64(h.backingOffset)
	}
	end = min(end, h.clusterSize())
	for off := int64(h.headerLength); ; {
		if off+8 > end {
			// No end marker: v2 images written by old tools may end the
			// area without one.
			return nil
		}
		typ := be.Uint32(b[off:])
		n := int64(be.Uint32(b[off+4:]))
		off += 8
		if typ == extEnd {
			return nil
		}
		if n > end-off {
			return fmt.Errorf("header extension %#x of %d bytes runs past the header area", typ, n)
		}
		data := b[off : off+n]
		switch typ {
		case extBackingFmt:
			// qemu's limit too (bs->backing_format).
			if len(data) > maxBackingFormat {
				return fmt.Errorf("backing format name of %d bytes, more than %d", len(data), maxBackingFormat)
			}
			h.backingFormat = string(data)
		case extFeatureNames:
			// 48-byte entries: type, bit number, 46-byte name.
			if h.featureNames == nil {
				h.featureNames = map[[2]byte]string{}
			}
			for e := data; len(e) >= 48; e = e[48:] {
				if e[0] > 2 || e[1] > 63 {
					continue // no such feature bit: keep at most 3*64 names
				}
				name := e[2:48]
				for i, c := range name {
					if c == 0 {
						name = name[:i]
						break
					}
				}
				h.featureNames[[2]byte{e[0], e[1]}] = string(name)
			}
		case extExternalData:
			h.externalDataName = string(data[:min(len(data), maxBackingName)])
		}
		off += (n + 7) &^ 7
	}
}

// featureList names the set bits of a feature field (typ 0 incompatible, 1
// compatible, 2 autoclear), with the names of the feature name table where
// it has them.
func (h *header) featureList(typ byte, bits uint64) string {
	s := ""
	for i := 0; i < 64; i++ {
		if bits&(1<<i) == 0 {
			continue
		}
		if s != "" {
			s += ", "
		}
		if name, ok := h.featureNames[[2]byte{typ, byte(i)}]; ok && name != "" {
			s += fmt.Sprintf("bit %d (%q)", i, name)
		} else {
			s += fmt.Sprintf("bit %d", i)
		}
	}
	return s
}
