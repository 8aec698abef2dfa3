package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The hosted sparse extent header ("KDMV", 512 bytes, little-endian, sizes
// and offsets in 512-byte sectors), as in VMware's Virtual Disk Format 5.0.
const (
	sectorSize = 512
	headerSize = 512

	flagNewlineTest = 1 << 0  // the check bytes at 73 are valid
	flagRGD         = 1 << 1  // a redundant grain directory is kept
	flagZeroGrain   = 1 << 2  // GTE 1 means "zeroed grain"
	flagCompressed  = 1 << 16 // grains are DEFLATE-compressed (streamOptimized)
	flagMarkers     = 1 << 17 // compressed grains and metadata carry markers
	// knownIncompatible are the incompatible flags (bits 16-31) this
	// package understands; any other one in that range refuses the extent.
	knownIncompatible = flagCompressed | flagMarkers

	gdAtEnd = 0xFFFFFFFFFFFFFFFF // GD_AT_END: the footer holds gdOffset

	gteZeroed = 1 // VMDK_GTE_ZEROED, when flagZeroGrain is set

	compressNone    = 0
	compressDeflate = 1 // zlib (RFC 1950) streams
)

// Caps on header fields, so that a hostile header cannot make Open allocate
// or loop without bound.
const (
	// maxExtentSectors: GTEs are 32-bit sector numbers, so an extent
	// cannot address more than 2 TiB (qemu's VMDK_EXTENT_MAX_SECTORS).
	maxExtentSectors = 1 << 32
	// maxGrainSectors bounds the grain (1 MiB): the grain is the unit
	// buffered for copy-on-write and decompression.
	maxGrainSectors = 2048
	// maxGTEs is the largest numGTEsPerGT accepted (the spec fixes 512,
	// qemu refuses more).
	maxGTEs = 512
	// maxGDEntries bounds the grain directory held in memory (4 MiB, the
	// same again for the redundant copy): 2 TiB of 4 KiB grains.
	maxGDEntries = 1 << 20
	// maxDescriptorSize bounds descriptors, embedded or standalone.
	maxDescriptorSize = 1 << 20
)

// header is a parsed sparse extent header.
type header struct {
	version     uint32
	flags       uint32
	capacity    uint64 // sectors
	grainSize   uint64 // sectors
	descOffset  uint64
	descSize    uint64
	numGTEs     uint32
	rgdOffset   uint64
	gdOffset    uint64
	overhead    uint64
	unclean     bool
	compression uint16
}

var magic = [4]byte{'K', 'D', 'M', 'V'}

// errNotSparse is returned by parseHeader for bytes that do not start with
// the KDMV magic.
var errNotSparse = errors.New("not a hosted sparse extent (no KDMV magic)")

// parseHeader decodes and validates a sparse extent header. It checks the
// fields on their own; checks against the file size are the caller's.
func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, fmt.Errorf("sparse extent header: %d bytes, want %d", len(b), headerSize)
	}
	if [4]byte(b[0:4]) != magic {
		return header{}, errNotSparse
	}
	le := binary.LittleEndian
	h := header{
		version:     le.Uint32(b[4:]),
		flags:       le.Uint32(b[8:]),
		capacity:    le.Uint64(b[12:]),
		grainSize:   le.Uint64(b[20:]),
		descOffset:  le.Uint64(b[28:]),
		descSize:    le.Uint64(b[36:]),
		numGTEs:     le.Uint32(b[44:]),
		rgdOffset:   le.Uint64(b[48:]),
		gdOffset:    le.Uint64(b[56:]),
		overhead:    le.Uint64(b[64:]),
		unclean:     b[72] != 0,
		compression: le.Uint16(b[77:]),
	}
	if h.version < 1 || h.version > 3 {
		return h, fmt.Errorf("sparse extent header: version %d is not supported (1 to 3 are)", h.version)
	}
	if unknown := h.flags &^ 0xFFFF &^ knownIncompatible; unknown != 0 {
		return h, fmt.Errorf("sparse extent header: unknown incompatible flags %#x", unknown)
	}
	if h.flags&flagNewlineTest != 0 && string(b[73:77]) != "\n \r\n" {
		return h, errors.New("sparse extent header: the newline check bytes are damaged (was the file transferred in text mode?)")
	}
	if h.grainSize == 0 || h.grainSize > maxGrainSectors || h.grainSize&(h.grainSize-1) != 0 {
		return h, fmt.Errorf("sparse extent header: grain size %d sectors is not a power of 2 up to %d", h.grainSize, maxGrainSectors)
	}
	if h.numGTEs == 0 || h.numGTEs > maxGTEs {
		return h, fmt.Errorf("sparse extent header: %d entries per grain table, want 1 to %d", h.numGTEs, maxGTEs)
	}
	if h.capacity == 0 || h.capacity > maxExtentSectors {
		return h, fmt.Errorf("sparse extent header: capacity %d sectors is outside 1 to 2^32", h.capacity)
	}
	if h.gdEntries() > maxGDEntries {
		return h, fmt.Errorf("sparse extent header: grain directory of %d entries is larger than %d", h.gdEntries(), maxGDEntries)
	}
	if h.compressed() != (h.compression == compressDeflate) {
		return h, fmt.Errorf("sparse extent header: compression algorithm %d with flags %#x is not supported", h.compression, h.flags)
	}
	if h.compression != compressNone && h.compression != compressDeflate {
		return h, fmt.Errorf("sparse extent header: compression algorithm %d is not supported", h.compression)
	}
	if h.descSize > maxDescriptorSize/sectorSize {
		return h, fmt.Errorf("sparse extent header: embedded descriptor of %d sectors is larger than %d bytes", h.descSize, maxDescriptorSize)
	}
	return h, nil
}

func (h header) compressed() bool { return h.flags&flagCompressed != 0 }

// gtCoverage is the number of sectors one grain table maps.
func (h header) gtCoverage() uint64 { return uint64(h.numGTEs) * h.grainSize }

// gdEntries is the number of grain directory entries for the capacity.
func (h header) gdEntries() uint64 { return (h.capacity + h.gtCoverage() - 1) / h.gtCoverage() }

// gtSectors is the size of one grain table in whole sectors.
func (h header) gtSectors() uint64 { return (uint64(h.numGTEs)*4 + sectorSize - 1) / sectorSize }

// Stream markers (streamOptimized): a metadata marker is a sector that
// starts with u64 numSectors, u32 size 0, u32 type.
const (
	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3
)
