package partitioned

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// GUID is a GPT GUID as it is stored on disk: mixed-endian, the first three
// groups little-endian and the last two big-endian, so that
// 0FC63DAF-8483-4772-8E79-3D69D8477DE4 is stored as AF 3D C6 0F 83 84 72 47
// 8E 79 3D 69 D8 47 7D E4.
type GUID [16]byte

// ParseGUID reads the text form, 8-4-4-4-12 hexadecimal digits in either
// case.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	parts := strings.Split(s, "-")
	if len(s) != 36 || len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 ||
		len(parts[2]) != 4 || len(parts[3]) != 4 || len(parts[4]) != 12 {
		return g, fmt.Errorf("%q is not a GUID (want 8-4-4-4-12 hex digits)", s)
	}
	var b [16]byte
	if _, err := hex.Decode(b[:], []byte(strings.Join(parts, ""))); err != nil {
		return g, fmt.Errorf("%q is not a GUID (want 8-4-4-4-12 hex digits)", s)
	}
	return guidFromBigEndian(b), nil
}

// MustParseGUID is ParseGUID for constants.
func MustParseGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// guidFromBigEndian converts the RFC 4122 byte order (the text's order) to
// the on-disk one.
func guidFromBigEndian(b [16]byte) GUID {
	var g GUID
	binary.LittleEndian.PutUint32(g[0:], binary.BigEndian.Uint32(b[0:]))
	binary.LittleEndian.PutUint16(g[4:], binary.BigEndian.Uint16(b[4:]))
	binary.LittleEndian.PutUint16(g[6:], binary.BigEndian.Uint16(b[6:]))
	copy(g[8:], b[8:])
	return g
}

// String returns the upper-case text form, as sgdisk prints it.
func (g GUID) String() string {
	return fmt.Sprintf("%08X-%04X-%04X-%04X-%012X",
		binary.LittleEndian.Uint32(g[0:]), binary.LittleEndian.Uint16(g[4:]), binary.LittleEndian.Uint16(g[6:]),
		binary.BigEndian.Uint16(g[8:]), g[10:])
}

// IsZero reports whether g is all zeros (an unused GPT entry).
func (g GUID) IsZero() bool { return g == GUID{} }

// nbdloopNamespace is the namespace of the name-based GUIDs nbdloop
// derives for its disks and partitions.
var nbdloopNamespace = [16]byte{0x6e, 0x62, 0x64, 0x6c, 0x6f, 0x6f, 0x70, 0x00, 0x8e, 0x4f, 0x47, 0x50, 0x54, 0x2d, 0x69, 0x64}

// nameGUID returns the RFC 4122 version 5 (SHA-1, name-based) GUID of name
// in nbdloop's namespace: the same name always gives the same GUID.
func nameGUID(name string) GUID {
	h := sha1.New()
	h.Write(nbdloopNamespace[:])
	h.Write([]byte(name))
	var b [16]byte
	copy(b[:], h.Sum(nil))
	b[6] = b[6]&0x0f | 0x50 // version 5
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return guidFromBigEndian(b)
}
