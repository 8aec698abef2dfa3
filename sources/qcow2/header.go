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
	h, err := decodeHeader(b)
	if err != nil {
		return nil, err
	}
	if err := h.checkFields(len(b)); err != nil {
		return nil, err
	}
	if err := h.setL2Layout(); err != nil {
		return nil, err
	}
	if err := h.parseCompressionType(b); err != nil {
		return nil, err
	}
	if err := h.checkTables(fileSize); err != nil {
		return nil, err
	}
	if err := h.parseBackingName(b); err != nil {
		return nil, err
	}
	if err := h.parseExtensions(b); err != nil {
		return nil, err
	}
	if err := h.checkFeatures(); err != nil {
		return nil, err
	}
	return h, nil
}

// decodeHeader decodes the fields of a version 2 or 3 header from b.
func decodeHeader(b []byte) (*header, error) {
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
	return h, nil
}

// checkFields checks the cluster size, the header length (against n, the
// bytes of cluster 0 read), the refcount width, encryption and the virtual
// size.
func (h *header) checkFields(n int) error {
	if h.clusterBits < minClusterBits || h.clusterBits > maxClusterBits {
		return fmt.Errorf("cluster_bits %d is outside %d..%d", h.clusterBits, minClusterBits, maxClusterBits)
	}
	cs := h.clusterSize()
	if h.version == 3 {
		if h.headerLength < v3HeaderLen || int64(h.headerLength) > cs || h.headerLength%8 != 0 {
			return fmt.Errorf("header_length %d is not a multiple of 8 in %d..%d", h.headerLength, v3HeaderLen, cs)
		}
		if int64(n) < int64(h.headerLength) {
			return fmt.Errorf("header_length %d is past the end of the file", h.headerLength)
		}
	}
	if h.refcountOrder > 6 {
		return fmt.Errorf("refcount_order %d is above 6", h.refcountOrder)
	}
	if h.cryptMethod != 0 {
		return fmt.Errorf("encrypted image (crypt_method %d): %w (decrypt it: qemu-img convert -O qcow2 --object secret,... --image-opts ...)", h.cryptMethod, ErrUnsupported)
	}
	if h.size > maxVirtualSize {
		return fmt.Errorf("virtual size %d is above 2^62", h.size)
	}
	return nil
}

// setL2Layout sets the size and count of L2 entries: 8 bytes, or 16 with
// extended L2 entries, which need clusters of 16 KiB or more.
func (h *header) setL2Layout() error {
	h.extendedL2 = h.incompatible&incExtendedL2 != 0
	h.l2EntryBytes = 8
	if h.extendedL2 {
		h.l2EntryBytes = 16
		if h.clusterBits < 14 {
			return fmt.Errorf("extended L2 entries need clusters of 16 KiB or more, not %d bytes", h.clusterSize())
		}
	}
	h.l2Entries = h.clusterSize() / h.l2EntryBytes
	return nil
}

// parseCompressionType reads the compression type (header byte 104) of an
// image with the compression type feature, and checks that it is 0 in the
// others.
func (h *header) parseCompressionType(b []byte) error {
	if h.incompatible&incCompression != 0 {
		if h.headerLength < v3HeaderLen+8 {
			return fmt.Errorf("compression type bit set but header_length %d has no room for it", h.headerLength)
		}
		h.compressionType = b[104]
		if h.compressionType != compressionZlib && h.compressionType != compressionZstd {
			return fmt.Errorf("compression type %d: %w (zlib and zstd are)", h.compressionType, ErrUnsupported)
		}
	} else if h.headerLength > v3HeaderLen && b[104] != 0 {
		return fmt.Errorf("compression type %d without the compression type feature bit", b[104])
	}
	return nil
}

// checkTables checks that the L1 table, the refcount table and the
// snapshot table are aligned, of capped size, and inside the file of
// fileSize bytes, and that the L1 table maps the virtual size.
func (h *header) checkTables(fileSize int64) error {
	cs := h.clusterSize()
	clusters := (h.size + uint64(cs) - 1) >> h.clusterBits
	needL1 := (clusters + uint64(h.l2Entries) - 1) / uint64(h.l2Entries)
	if uint64(h.l1Size) < needL1 {
		return fmt.Errorf("L1 table of %d entries is too small for %d bytes (%d needed)", h.l1Size, h.size, needL1)
	}
	if uint64(h.l1Size)*8 > maxL1Bytes {
		return fmt.Errorf("L1 table of %d entries is larger than %d MiB", h.l1Size, maxL1Bytes>>20)
	}
	if err := checkTable("L1 table", h.l1Offset, uint64(h.l1Size)*8, cs, fileSize); err != nil {
		return err
	}
	if h.refTableClusters == 0 || uint64(h.refTableClusters)<<h.clusterBits > maxRefTableBytes {
		return fmt.Errorf("refcount table of %d clusters is empty or larger than %d MiB", h.refTableClusters, maxRefTableBytes>>20)
	}
	if err := checkTable("refcount table", h.refTableOffset, uint64(h.refTableClusters)<<h.clusterBits, cs, fileSize); err != nil {
		return err
	}
	if h.nbSnapshots > maxSnapshots {
		return fmt.Errorf("%d snapshots, more than %d", h.nbSnapshots, maxSnapshots)
	}
	if h.nbSnapshots > 0 && (h.snapshotsOffset%uint64(cs) != 0 || h.snapshotsOffset >= uint64(fileSize)) {
		return fmt.Errorf("snapshot table offset %d is unaligned or past the end of the file", h.snapshotsOffset)
	}
	return nil
}

// parseBackingName reads the backing file name, which lives in cluster 0
// (b), after the extensions.
func (h *header) parseBackingName(b []byte) error {
	if h.backingOffset == 0 {
		return nil
	}
	if h.backingSize == 0 || h.backingSize > maxBackingName {
		return fmt.Errorf("backing file name length %d is outside 1..%d", h.backingSize, maxBackingName)
	}
	// Compared without adding: offset+size may wrap around.
	area := uint64(min(h.clusterSize(), int64(len(b))))
	if h.backingOffset > area || uint64(h.backingSize) > area-h.backingOffset {
		return fmt.Errorf("backing file name at %d+%d lies outside the first cluster (%d bytes)", h.backingOffset, h.backingSize, area)
	}
	h.backingFile = string(b[h.backingOffset : h.backingOffset+uint64(h.backingSize)])
	return nil
}

// checkFeatures refuses unknown incompatible features and external data
// files, naming them.
func (h *header) checkFeatures() error {
	if unknown := h.incompatible &^ incKnown; unknown != 0 {
		return fmt.Errorf("incompatible features %s: %w", h.featureList(0, unknown), ErrUnsupported)
	}
	if h.incompatible&incExternalData != 0 {
		return fmt.Errorf("external data file %q: %w (convert the image: qemu-img convert -O qcow2 IMAGE NEW.qcow2)", h.externalDataName, ErrUnsupported)
	}
	return nil
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
