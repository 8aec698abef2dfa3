package partitioned

import (
	"fmt"
	"strconv"
	"strings"
)

// PartType is a partition type: its GPT type GUID and its MBR system ID.
type PartType struct {
	// Name is nbdloop's name for the type, as --type takes it ("linux",
	// "swap", ...); empty for a GUID or MBR ID given literally.
	Name string
	// GUID is the GPT partition type GUID; zero when the type has none.
	GUID GUID
	// MBR is the MBR system ID (0x83, ...); 0 when the type has none.
	MBR byte
	// Desc is what sgdisk and fdisk call it.
	Desc string
}

// String returns the type's name, or its GUID or MBR ID when it has none.
func (t PartType) String() string {
	switch {
	case t.Name != "":
		return t.Name
	case !t.GUID.IsZero():
		return t.GUID.String()
	}
	return fmt.Sprintf("0x%02x", t.MBR)
}

// Types lists the partition types by name. gdisk names the same types by
// four hex digits (8300, 8200, ef00, ...); ParseType accepts those too.
var Types = []struct {
	PartType
	Aliases []string
	Gdisk   string
}{
	{PartType{"linux", MustParseGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4"), 0x83, "Linux filesystem"}, []string{"linux-filesystem"}, "8300"},
	{PartType{"swap", MustParseGUID("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"), 0x82, "Linux swap"}, []string{"linux-swap"}, "8200"},
	{PartType{"esp", MustParseGUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), 0xef, "EFI system partition"}, []string{"efi", "uefi"}, "ef00"},
	{PartType{"msdata", MustParseGUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"), 0x07, "Microsoft basic data"}, []string{"basic-data", "windows", "fat", "ntfs", "exfat"}, "0700"},
	{PartType{"bios", MustParseGUID("21686148-6449-6E6F-744E-656564454649"), 0, "BIOS boot partition"}, []string{"bios-boot"}, "ef02"},
	{PartType{"lvm", MustParseGUID("E6D6D379-F507-44C2-A23C-238F2A3DF928"), 0x8e, "Linux LVM"}, nil, "8e00"},
	{PartType{"raid", MustParseGUID("A19D880F-05FC-4D3B-A006-743F0F84911E"), 0xfd, "Linux RAID"}, nil, "fd00"},
	{PartType{"luks", MustParseGUID("CA7D7CCB-63ED-4C53-861C-1742536059CC"), 0x83, "Linux LUKS"}, nil, "8309"},
	{PartType{"home", MustParseGUID("933AC7E1-2EB4-4F13-B844-0E14E2AEF915"), 0x83, "Linux /home"}, nil, "8302"},
}

// MBR system IDs with a meaning of their own.
const (
	mbrEmpty       = 0x00
	mbrFAT12       = 0x01
	mbrFAT16LBA    = 0x0e
	mbrFAT32LBA    = 0x0c
	mbrExtended    = 0x05
	mbrExtendedLBA = 0x0f
	mbrLinuxExt    = 0x85
	mbrProtective  = 0xee
)

// TypeByName returns the named type (aliases and gdisk codes included).
func TypeByName(name string) (PartType, bool) {
	n := strings.ToLower(name)
	for _, t := range Types {
		if t.Name == n || t.Gdisk == n || contains(t.Aliases, n) {
			return t.PartType, true
		}
	}
	return PartType{}, false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TypeNames lists the names ParseType takes, for help and errors.
func TypeNames() []string {
	var names []string
	for _, t := range Types {
		names = append(names, t.Name)
	}
	return names
}

// ParseType reads a partition type: a name from Types, a gdisk code (8300,
// ef00, ...), a GPT type GUID, or an MBR system ID in hex (0x83).
func ParseType(s string) (PartType, error) {
	if t, ok := TypeByName(s); ok {
		return t, nil
	}
	if len(s) == 36 {
		g, err := ParseGUID(s)
		if err != nil {
			return PartType{}, err
		}
		return typeOfGUID(g), nil
	}
	if hexID, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		id, err := strconv.ParseUint(hexID, 16, 8)
		if err == nil && id != 0 {
			return typeOfMBR(byte(id)), nil
		}
	}
	return PartType{}, fmt.Errorf("unknown partition type %q (use %s, a gdisk code such as 8300, a GPT type GUID, or an MBR ID such as 0x83)",
		s, strings.Join(TypeNames(), ", "))
}

// typeOfGUID returns the named type with GUID g, or an unnamed one.
func typeOfGUID(g GUID) PartType {
	for _, t := range Types {
		if t.GUID == g {
			return t.PartType
		}
	}
	return PartType{GUID: g}
}

// typeOfMBR returns the named type with MBR ID id, or an unnamed one. The
// IDs that several types share (0x83) name the first of them (linux).
func typeOfMBR(id byte) PartType {
	switch id {
	case mbrFAT12, mbrFAT16LBA, mbrFAT32LBA, 0x04, 0x06, 0x0b:
		t, _ := TypeByName("msdata")
		t.MBR = id
		return t
	case mbrExtended, mbrExtendedLBA, mbrLinuxExt:
		return PartType{Name: "extended", MBR: id, Desc: "Extended"}
	}
	for _, t := range Types {
		if t.MBR == id {
			return t.PartType
		}
	}
	return PartType{MBR: id}
}
