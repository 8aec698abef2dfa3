package partitioned

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
)

// detectSize is how much of a partition Detect reads: enough for the btrfs
// superblock at 64 KiB and a swap signature on 64 KiB pages.
const detectSize = 64<<10 + 4096

// Detect names what a partition's first bytes hold, with blkid's names:
// "ext2", "ext3", "ext4", "xfs", "btrfs", "swap", "vfat" (with the FAT
// width in fat: 12, 16 or 32), "ntfs", "exfat", "LVM2_member",
// "crypto_LUKS", "linux_raid_member", or "" when it knows none of them. It
// reads at most the first 68 KiB of r, which holds size bytes.
func Detect(r io.ReaderAt, size int64) (content string, fat int, err error) {
	head := make([]byte, min(size, detectSize))
	if n, err := r.ReadAt(head, 0); n < len(head) && !errors.Is(err, io.EOF) {
		return "", 0, err
	}
	content, fat = detectHead(head)
	return content, fat, nil
}

// at returns the n bytes of head at off, or nil when head is too short.
func at(head []byte, off, n int) []byte {
	if off+n > len(head) {
		return nil
	}
	return head[off : off+n]
}

func detectHead(head []byte) (string, int) {
	eq := func(off int, magic string) bool { return bytes.Equal(at(head, off, len(magic)), []byte(magic)) }
	switch {
	case eq(0, "XFSB"):
		return "xfs", 0
	case eq(0, "LUKS\xba\xbe"), eq(0, "SKUL\xba\xbe"):
		return "crypto_LUKS", 0
	case eq(65536+64, "_BHRfS_M"):
		return "btrfs", 0
	case eq(3, "NTFS    "):
		return "ntfs", 0
	case eq(3, "EXFAT   "):
		return "exfat", 0
	}
	if b := at(head, 1024+56, 2); b != nil && binary.LittleEndian.Uint16(b) == 0xef53 {
		return extVersion(head), 0
	}
	for _, page := range []int{4096, 8192, 16384, 65536} {
		if eq(page-10, "SWAPSPACE2") || eq(page-10, "SWAP-SPACE") {
			return "swap", 0
		}
	}
	for sector := 0; sector < 4; sector++ {
		if eq(sector*512, "LABELONE") && eq(sector*512+24, "LVM2 001") {
			return "LVM2_member", 0
		}
	}
	for _, off := range []int{0, 4096} { // md superblock 1.1 and 1.2
		if b := at(head, off, 4); b != nil && binary.LittleEndian.Uint32(b) == 0xa92b4efc {
			return "linux_raid_member", 0
		}
	}
	if fat := fatWidth(head); fat != 0 {
		return "vfat", fat
	}
	return "", 0
}

// extVersion tells ext2, ext3 and ext4 apart by their feature flags, as
// blkid does: a journal makes ext3, ext4-only features make ext4.
func extVersion(head []byte) string {
	sb := head[1024:]
	if len(sb) < 0x68 {
		return "ext2"
	}
	compat := binary.LittleEndian.Uint32(sb[0x5c:])
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	roCompat := binary.LittleEndian.Uint32(sb[0x64:])
	const (
		compatJournal = 0x4
		// Incompatible features ext3 does not have: extents, 64bit,
		// flex_bg, mmp, meta_bg, inline_data, ...; read-only compatible
		// ones: huge_file, gdt_csum, dir_nlink, extra_isize, metadata_csum.
		ext3Incompat = 0x0001 | 0x0002 | 0x0004
		ext3RoCompat = 0x0001 | 0x0002 | 0x0004
	)
	switch {
	case incompat&^ext3Incompat != 0 || roCompat&^ext3RoCompat != 0:
		return "ext4"
	case compat&compatJournal != 0:
		return "ext3"
	}
	return "ext2"
}

// fatWidth returns 12, 16 or 32 for a FAT boot sector, 0 for anything else.
func fatWidth(head []byte) int {
	bs := at(head, 0, 512)
	if bs == nil || (bs[0] != 0xeb && bs[0] != 0xe9) || bs[510] != 0x55 || bs[511] != 0xaa {
		return 0
	}
	bytesPerSector := binary.LittleEndian.Uint16(bs[11:])
	perCluster := bs[13]
	reserved := binary.LittleEndian.Uint16(bs[14:])
	fats := bs[16]
	if bytesPerSector < 512 || bytesPerSector > 4096 || bytesPerSector&(bytesPerSector-1) != 0 ||
		perCluster == 0 || perCluster&(perCluster-1) != 0 || reserved == 0 || fats == 0 {
		return 0
	}
	switch {
	case binary.LittleEndian.Uint16(bs[22:]) == 0 && bytes.HasPrefix(bs[82:], []byte("FAT32")):
		return 32
	case bytes.HasPrefix(bs[54:], []byte("FAT12")):
		return 12
	case bytes.HasPrefix(bs[54:], []byte("FAT16")), bytes.HasPrefix(bs[54:], []byte("FAT     ")):
		return 16
	}
	return 0
}

// TypeFor returns the partition type for content as Detect names it: a
// Linux file system or unknown content gives "linux" (nbdkit's default),
// swap "swap", FAT "msdata", or "esp" when esp is set, NTFS and exFAT
// "msdata", LVM, LUKS and MD RAID members their own types. The MBR ID of a
// FAT partition follows its width (0x01, 0x0e, 0x0c).
func TypeFor(content string, fat int, esp bool) PartType {
	name := "linux"
	switch content {
	case "swap":
		name = "swap"
	case "vfat":
		name = "msdata"
		if esp {
			name = "esp"
		}
	case "ntfs", "exfat":
		name = "msdata"
	case "LVM2_member":
		name = "lvm"
	case "crypto_LUKS":
		name = "luks"
	case "linux_raid_member":
		name = "raid"
	}
	t, _ := TypeByName(name)
	if name == "msdata" {
		switch fat {
		case 12:
			t.MBR = mbrFAT12
		case 16:
			t.MBR = mbrFAT16LBA
		case 32:
			t.MBR = mbrFAT32LBA
		}
	}
	return t
}
