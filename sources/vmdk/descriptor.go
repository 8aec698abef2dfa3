package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Descriptor is a parsed VMDK descriptor: the text that names the disk's
// extents, standalone (a small .vmdk file) or embedded in a monolithic
// sparse or streamOptimized file.
type Descriptor struct {
	Version    int
	CID        uint32
	ParentCID  uint32 // NoParent when the disk has no parent
	CreateType string
	// ParentFileNameHint names the parent of a delta disk, relative to the
	// descriptor's directory unless absolute.
	ParentFileNameHint string
	Extents            []ExtentDesc
}

// NoParent is the parentCID of a disk without a parent.
const NoParent = 0xFFFFFFFF

// ExtentDesc is one extent line: `ACCESS SECTORS TYPE "FILE" [OFFSET]`.
type ExtentDesc struct {
	Access  string // RW, RDONLY or NOACCESS
	Sectors int64
	Type    string // FLAT, SPARSE, ZERO, VMFS, VMFSRAW, VMFSRDM, VMFSSPARSE, SESPARSE
	File    string // empty for ZERO
	Offset  int64  // sectors into File, FLAT only
}

// maxExtents bounds the extent lines of a descriptor (a 2 TiB
// twoGbMaxExtent disk has 1024).
const maxExtents = 4096

// maxDiskSectors bounds the disk so that its size in bytes fits an int64.
const maxDiskSectors = math.MaxInt64 / sectorSize

// descriptorMagic starts every descriptor VMware and qemu write.
const descriptorMagic = "# Disk DescriptorFile"

var errNoExtents = errors.New("descriptor has no extent lines")

// ParseDescriptor parses a descriptor. It stops at the first NUL byte (an
// embedded descriptor is padded with them), accepts \n and \r\n line ends
// and # comments, and checks what it keeps: the extent lines, sector counts
// that add up without overflow, and hexadecimal CIDs. Unknown keys (the
// ddb.* disk database among them) are ignored.
func ParseDescriptor(b []byte) (*Descriptor, error) {
	if len(b) > maxDescriptorSize {
		return nil, fmt.Errorf("descriptor of %d bytes is larger than %d", len(b), maxDescriptorSize)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	d := &Descriptor{CID: 0, ParentCID: NoParent}
	var total int64
	n := -1
	for line := range strings.Lines(string(b)) {
		n++
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if word, _, _ := strings.Cut(line, " "); word == "RW" || word == "RDONLY" || word == "NOACCESS" {
			if len(d.Extents) == maxExtents {
				return nil, fmt.Errorf("descriptor has more than %d extents", maxExtents)
			}
			e, err := parseExtentLine(line)
			if err != nil {
				return nil, fmt.Errorf("descriptor line %d: %w", n+1, err)
			}
			if e.Sectors > maxDiskSectors-total {
				return nil, fmt.Errorf("descriptor line %d: the extents add up to more than 2^63 bytes", n+1)
			}
			total += e.Sectors
			d.Extents = append(d.Extents, e)
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("descriptor line %d: %q is neither key=value nor an extent", n+1, truncate(line))
		}
		key, val = strings.TrimSpace(key), unquote(strings.TrimSpace(val))
		var err error
		switch key {
		case "version":
			d.Version, err = strconv.Atoi(val)
			if err == nil && (d.Version < 1 || d.Version > 3) {
				err = fmt.Errorf("version %d is not 1, 2 or 3", d.Version)
			}
		case "CID":
			d.CID, err = parseCID(val)
		case "parentCID":
			d.ParentCID, err = parseCID(val)
		case "createType":
			d.CreateType = val
		case "parentFileNameHint":
			d.ParentFileNameHint = val
		}
		if err != nil {
			return nil, fmt.Errorf("descriptor line %d: %s: %w", n+1, key, err)
		}
	}
	return d, nil
}

// parseExtentLine parses `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`; the file
// name may hold spaces.
func parseExtentLine(line string) (ExtentDesc, error) {
	var e ExtentDesc
	quote := strings.IndexByte(line, '"')
	head, rest := line, ""
	if quote >= 0 {
		head, rest = line[:quote], line[quote+1:]
	}
	f := strings.Fields(head)
	if len(f) != 3 {
		return e, fmt.Errorf("extent %q: want ACCESS SECTORS TYPE \"FILE\" [OFFSET]", truncate(line))
	}
	e.Access, e.Type = f[0], f[2]
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n <= 0 || n > maxDiskSectors {
		return e, fmt.Errorf("extent %q: sector count %q is not a number from 1 to 2^54", truncate(line), f[1])
	}
	e.Sectors = n
	if quote >= 0 {
		end := strings.IndexByte(rest, '"')
		if end < 0 {
			return e, fmt.Errorf("extent %q: file name has no closing quote", truncate(line))
		}
		e.File, rest = rest[:end], strings.TrimSpace(rest[end+1:])
		if e.File == "" {
			return e, fmt.Errorf("extent %q: empty file name", truncate(line))
		}
	}
	switch e.Type {
	case "ZERO":
		if e.File != "" || rest != "" {
			return e, fmt.Errorf("extent %q: a ZERO extent has no file", truncate(line))
		}
		return e, nil
	case "FLAT", "SPARSE", "VMFS", "VMFSRAW", "VMFSRDM", "VMFSSPARSE", "SESPARSE":
	default:
		return e, fmt.Errorf("extent %q: unknown type %q", truncate(line), e.Type)
	}
	if e.File == "" {
		return e, fmt.Errorf("extent %q: %s extent without a file name", truncate(line), e.Type)
	}
	if rest != "" {
		if e.Type != "FLAT" {
			return e, fmt.Errorf("extent %q: only FLAT extents take an offset", truncate(line))
		}
		off, err := strconv.ParseInt(rest, 10, 64)
		if err != nil || off < 0 || off > maxDiskSectors-e.Sectors {
			return e, fmt.Errorf("extent %q: offset %q is not a sector number", truncate(line), rest)
		}
		e.Offset = off
	}
	return e, nil
}

func parseCID(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a 32-bit hexadecimal number", truncate(s))
	}
	return uint32(v), nil
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// truncate shortens text quoted in error messages from untrusted files.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Size is the disk size in bytes: the sum of the extents.
func (d *Descriptor) Size() int64 {
	var n int64
	for _, e := range d.Extents {
		n += e.Sectors
	}
	return n * sectorSize
}
