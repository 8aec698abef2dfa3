package partitioned

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// sgdiskRow is one partition line of `sgdisk -p`.
type sgdiskRow struct {
	number     int
	start, end int64
	code, name string
}

// sgdiskCheck runs `sgdisk -v` (which must find no problems) and
// `sgdisk -p` on the image, and returns the partitions and the header
// lines of the latter.
func sgdiskCheck(t *testing.T, path string) ([]sgdiskRow, string) {
	t.Helper()
	lookTool(t, "sgdisk")
	if out := tool(t, "sgdisk", "-v", path); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	out := tool(t, "sgdisk", "-p", path)
	head, table, ok := strings.Cut(out, "Number  Start (sector)")
	if !ok {
		t.Fatalf("sgdisk -p printed no partition list:\n%s", out)
	}
	var rows []sgdiskRow
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		var r sgdiskRow
		r.number, _ = strconv.Atoi(f[0])
		r.start, _ = strconv.ParseInt(f[1], 10, 64)
		r.end, _ = strconv.ParseInt(f[2], 10, 64)
		r.code = f[5]
		r.name = strings.Join(f[6:], " ")
		rows = append(rows, r)
	}
	return rows, head
}

// sfdiskVerify runs `sfdisk -V`, which must find no errors.
func sfdiskVerify(t *testing.T, path string, args ...string) {
	t.Helper()
	lookTool(t, "sfdisk")
	out, err := toolErr("sfdisk", append(append([]string{"-V"}, args...), path)...)
	if err != nil || !strings.Contains(out, "No errors detected") || strings.Contains(out, "rror:") {
		t.Errorf("sfdisk -V: %v\n%s", err, out)
	}
}

// TestDiskGPTTools builds the paper's disk (plus an ESP) from file systems
// made by the real tools and checks the result with sgdisk, sfdisk and
// blkid.
func TestDiskGPTTools(t *testing.T) {
	dir := t.TempDir()
	boot, _ := mkfsFile(t, dir, "boot.img", 16<<20, "mkfs.ext4", "-q", "-F")
	swap, _ := mkfsFile(t, dir, "swap.img", 4<<20+1000, "mkswap", "-q")
	root, _ := mkfsFile(t, dir, "root.img", 300<<20, "mkfs.xfs", "-q")
	efi, _ := mkfsFile(t, dir, "efi.img", 8<<20, "mkfs.vfat")
	d, err := New([]Part{
		{Source: boot, Name: "boot", ID: "/x/boot.img"},
		{Source: swap, Name: "swap", ID: "/x/swap.img"},
		{Source: root, Name: "root", ID: "/x/root.img"},
		{Source: efi, Name: "efi", ID: "/x/efi.img"},
	}, Options{ESP: true})
	if err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, d, dir)

	rows, head := sgdiskCheck(t, img)
	if want := "Disk identifier (GUID): " + d.GUID().String(); !strings.Contains(head, want) {
		t.Errorf("sgdisk -p header lacks %q:\n%s", want, head)
	}
	if !strings.Contains(head, "Partition table holds up to 128 entries") {
		t.Errorf("sgdisk -p: want 128 entries:\n%s", head)
	}
	want := []sgdiskRow{
		{1, 2048, 2048 + 16<<11 - 1, "8300", "boot"},
		{2, 2048 + 16<<11, 2048 + 16<<11 + 8194 - 1, "8200", "swap"},
		{3, 2048 + 16<<11 + 10240, 2048 + 16<<11 + 10240 + 300<<11 - 1, "8300", "root"},
		{4, 2048 + 16<<11 + 10240 + 300<<11, 2048 + 16<<11 + 10240 + 300<<11 + 8<<11 - 1, "EF00", "efi"},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("sgdisk -p partitions:\n got %v\nwant %v", rows, want)
	}
	sfdiskVerify(t, img)

	st := sfdiskJSON(t, img).PartitionTable
	if st.Label != "gpt" || st.ID != d.GUID().String() || st.FirstLBA != 34 || st.LastLBA != d.Size()/512-34 {
		t.Errorf("sfdisk --json: label %s, id %s, first %d, last %d; want gpt, %s, 34, %d",
			st.Label, st.ID, st.FirstLBA, st.LastLBA, d.GUID(), d.Size()/512-34)
	}
	parts := d.Partitions()
	if len(st.Partitions) != len(parts) {
		t.Fatalf("sfdisk --json: %d partitions, want %d", len(st.Partitions), len(parts))
	}
	for i, p := range parts {
		sp := st.Partitions[i]
		if sp.Start*512 != p.Start || sp.Size*512 != p.Size || sp.Type != p.Type.GUID.String() ||
			sp.UUID != p.GUID.String() || sp.Name != p.Name {
			t.Errorf("sfdisk --json partition %d = %+v, want start %d size %d type %s uuid %s name %s",
				i+1, sp, p.Start/512, p.Size/512, p.Type.GUID, p.GUID, p.Name)
		}
	}

	if kv := blkid(t, img, 0, 0); kv["PTTYPE"] != "gpt" || kv["PTUUID"] != strings.ToLower(d.GUID().String()) {
		t.Errorf("blkid -p disk.img = %v, want PTTYPE gpt, PTUUID %s", kv, strings.ToLower(d.GUID().String()))
	}
	for i, fs := range []string{"ext4", "swap", "xfs", "vfat"} {
		p := parts[i]
		if kv := blkid(t, img, p.Start, p.Size); kv["TYPE"] != fs {
			t.Errorf("blkid -p of partition %d = %v, want TYPE %s", p.Number, kv, fs)
		}
		if p.Content != fs {
			t.Errorf("partition %d: Content = %q, want %q", p.Number, p.Content, fs)
		}
	}
}

// TestDiskMBRTools: six files give three primaries, the extended
// partition 4 and logicals 5-7, which sfdisk and blkid read back.
func TestDiskMBRTools(t *testing.T) {
	dir := t.TempDir()
	var parts []Part
	sizes := []int64{1 << 20, 3000, 2 << 20, 512, 1<<20 + 1, 4096}
	for i, size := range sizes {
		parts = append(parts, Part{Source: memPart(t, size, uint64(i)), Name: fmt.Sprintf("p%d", i)})
	}
	swap, _ := mkfsFile(t, dir, "swap.img", 1<<20, "mkswap", "-q")
	parts[4].Source = swap
	d, err := New(parts, Options{Table: "mbr"})
	if err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, d, dir)
	sfdiskVerify(t, img)
	st := sfdiskJSON(t, img).PartitionTable
	if st.Label != "dos" || st.ID != fmt.Sprintf("0x%08x", d.DiskID()) {
		t.Errorf("sfdisk --json: label %s id %s, want dos, 0x%08x", st.Label, st.ID, d.DiskID())
	}
	type row struct {
		node        string
		start, size int64
		typ         string
		boot        bool
	}
	var got []row
	for _, p := range st.Partitions {
		got = append(got, row{strings.TrimPrefix(p.Node, img), p.Start, p.Size, p.Type, p.Bootable})
	}
	ps := d.Partitions()
	ext := d.Extended()
	if ext == nil {
		t.Fatal("Extended() = nil with six partitions")
	}
	want := []row{{"1", ps[0].Start / 512, ps[0].Size / 512, "83", true}}
	for i := 1; i < 3; i++ {
		want = append(want, row{strconv.Itoa(i + 1), ps[i].Start / 512, ps[i].Size / 512, "83", false})
	}
	want = append(want, row{"4", ext.Start / 512, ext.Size / 512, "f", false})
	for i := 3; i < 6; i++ {
		typ := "83"
		if i == 4 {
			typ = "82"
		}
		want = append(want, row{strconv.Itoa(i + 2), ps[i].Start / 512, ps[i].Size / 512, typ, false})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sfdisk --json partitions:\n got %v\nwant %v", got, want)
	}
	for i, p := range ps {
		if p.Number != []int{1, 2, 3, 5, 6, 7}[i] {
			t.Errorf("partition %d: Number = %d", i, p.Number)
		}
	}
	if kv := blkid(t, img, 0, 0); kv["PTTYPE"] != "dos" || kv["PTUUID"] != fmt.Sprintf("%08x", d.DiskID()) {
		t.Errorf("blkid -p disk.img = %v, want PTTYPE dos, PTUUID %08x", kv, d.DiskID())
	}
	if kv := blkid(t, img, ps[4].Start, ps[4].Size); kv["TYPE"] != "swap" {
		t.Errorf("blkid -p of partition 6 = %v, want TYPE swap", kv)
	}
}

// TestDiskMBRFour: four files are four primaries, no extended partition.
func TestDiskMBRFour(t *testing.T) {
	var parts []Part
	for i := range 4 {
		parts = append(parts, Part{Source: memPart(t, 100<<10, uint64(i)), Name: "x"})
	}
	d, err := New(parts, Options{Table: "mbr", Align: 4096})
	if err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, d, t.TempDir())
	sfdiskVerify(t, img)
	st := sfdiskJSON(t, img).PartitionTable
	if len(st.Partitions) != 4 || d.Extended() != nil {
		t.Fatalf("sfdisk --json: %d partitions, extended %v; want 4 primaries", len(st.Partitions), d.Extended())
	}
	for i, p := range st.Partitions {
		// 100 KiB is 200 sectors, a multiple of the 4 KiB alignment.
		if p.Start != 8+int64(i)*200 {
			t.Errorf("partition %d starts at sector %d", i+1, p.Start)
		}
	}
}

// TestDiskManyPartitions: more than 128 partitions grow the entry array
// (to a multiple of 128 entries), which sgdisk and sfdisk accept.
func TestDiskManyPartitions(t *testing.T) {
	for _, n := range []int{128, 129, 200} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			var parts []Part
			for i := range n {
				parts = append(parts, Part{Source: memPart(t, 4096, uint64(i)), Name: fmt.Sprintf("part%03d", i+1)})
			}
			d, err := New(parts, Options{Align: 4096})
			if err != nil {
				t.Fatal(err)
			}
			entries := (n + 127) / 128 * 128
			img := writeImage(t, d, t.TempDir())
			rows, head := sgdiskCheck(t, img)
			if want := fmt.Sprintf("Partition table holds up to %d entries", entries); !strings.Contains(head, want) {
				t.Errorf("sgdisk -p: want %q:\n%s", want, head)
			}
			if len(rows) != n || rows[n-1].number != n || rows[n-1].name != fmt.Sprintf("part%03d", n) {
				t.Errorf("sgdisk -p: %d partitions, last %+v; want %d", len(rows), rows[len(rows)-1], n)
			}
			sfdiskVerify(t, img)
			first := int64(2 + entries/4)
			if st := sfdiskJSON(t, img).PartitionTable; len(st.Partitions) != n || st.FirstLBA != first {
				t.Errorf("sfdisk --json: %d partitions, first LBA %d; want %d, %d", len(st.Partitions), st.FirstLBA, n, first)
			}
		})
	}
}

// TestDisk4KSectors: tables for 4096-byte sectors, read back by fdisk -b
// 4096 (this sfdisk has no --sector-size).
func TestDisk4KSectors(t *testing.T) {
	lookTool(t, "fdisk")
	for _, table := range []string{"gpt", "mbr"} {
		t.Run(table, func(t *testing.T) {
			var parts []Part
			for i := range 5 {
				parts = append(parts, Part{Source: memPart(t, 10000, uint64(i)), Name: "p"})
			}
			d, err := New(parts, Options{Table: table, SectorSize: 4096})
			if err != nil {
				t.Fatal(err)
			}
			img := writeImage(t, d, t.TempDir())
			out, err := toolErr("fdisk", "-b", "4096", "-l", "-o", "Device,Start,Sectors", img)
			if err != nil || strings.Contains(out, "mismatch") || strings.Contains(out, "corrupt") || strings.Contains(out, "invalid") {
				t.Fatalf("fdisk -b 4096 -l: %v\n%s", err, out)
			}
			var got []int64
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) == 3 && strings.HasPrefix(f[0], img) {
					start, _ := strconv.ParseInt(f[1], 10, 64)
					n, _ := strconv.ParseInt(f[2], 10, 64)
					got = append(got, start*4096, n*4096)
				}
			}
			var want []int64
			for i, p := range d.Partitions() {
				if table == "mbr" && i == 3 {
					want = append(want, d.Extended().Start, d.Extended().Size)
				}
				want = append(want, p.Start, p.Size)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("fdisk -b 4096 -l partitions (start, size in bytes):\n got %v\nwant %v\n%s", got, want, out)
			}
			if table == "gpt" && !strings.Contains(out, "Disk identifier: "+d.GUID().String()) {
				t.Errorf("fdisk -b 4096 -l does not show the disk GUID %s:\n%s", d.GUID(), out)
			}
		})
	}
}

// TestDiskGUIDs: the same inputs give the same GUIDs; other inputs other
// GUIDs; partition GUIDs are unique.
func TestDiskGUIDs(t *testing.T) {
	build := func(ids ...string) *Disk {
		var parts []Part
		for i, id := range ids {
			parts = append(parts, Part{Source: memPart(t, 8192, uint64(i)), Name: "same", ID: id})
		}
		d, err := New(parts, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, b := build("/a", "/b", "/c"), build("/a", "/b", "/c")
	if a.GUID() != b.GUID() || a.DiskID() != b.DiskID() {
		t.Errorf("same inputs: GUIDs %s and %s, disk IDs %08x and %08x", a.GUID(), b.GUID(), a.DiskID(), b.DiskID())
	}
	seen := map[GUID]bool{a.GUID(): true}
	for i, p := range a.Partitions() {
		if p.GUID != b.Partitions()[i].GUID {
			t.Errorf("partition %d: GUIDs %s and %s for the same inputs", i+1, p.GUID, b.Partitions()[i].GUID)
		}
		if seen[p.GUID] {
			t.Errorf("partition %d: GUID %s is not unique", i+1, p.GUID)
		}
		seen[p.GUID] = true
		if p.GUID.String()[14] != '5' {
			t.Errorf("partition %d: GUID %s is not version 5", i+1, p.GUID)
		}
	}
	c := build("/a", "/b", "/d")
	if c.GUID() == a.GUID() || c.DiskID() == a.DiskID() || c.Partitions()[2].GUID == a.Partitions()[2].GUID {
		t.Errorf("other inputs gave the same GUIDs")
	}
	// A partition keeps its GUID when another file changes.
	if c.Partitions()[0].GUID != a.Partitions()[0].GUID {
		t.Errorf("partition 1 changed GUID when partition 3's file changed")
	}
	// The same file twice still gives two GUIDs.
	if d := build("/a", "/a"); d.Partitions()[0].GUID == d.Partitions()[1].GUID {
		t.Errorf("the same file twice: one GUID")
	}
}

// TestDiskNames: names are UTF-16 in the entry, cut to 36 code units, and
// sfdisk reads them back.
func TestDiskNames(t *testing.T) {
	names := []string{"boot", "räksmörgås", strings.Repeat("x", 40), "😀" + strings.Repeat("y", 34) + "😀", ""}
	want := []string{"boot", "räksmörgås", strings.Repeat("x", 36), "😀" + strings.Repeat("y", 34), ""}
	var parts []Part
	for i, n := range names {
		parts = append(parts, Part{Source: memPart(t, 4096, uint64(i)), Name: n})
	}
	d, err := New(parts, Options{Align: 4096})
	if err != nil {
		t.Fatal(err)
	}
	st := sfdiskJSON(t, writeImage(t, d, t.TempDir())).PartitionTable
	for i, p := range st.Partitions {
		if p.Name != want[i] {
			t.Errorf("partition %d: sfdisk reads name %q, want %q", i+1, p.Name, want[i])
		}
	}
}

func TestDiskTypes(t *testing.T) {
	dir := t.TempDir()
	fat, _ := mkfsFile(t, dir, "fat.img", 20<<20, "mkfs.vfat", "-F", "16")
	fat32, _ := mkfsFile(t, dir, "fat32.img", 40<<20, "mkfs.vfat", "-F", "32")
	raw := memPart(t, 8192, 1)
	tests := []struct {
		name     string
		part     Part
		opts     Options
		wantGUID string
		wantMBR  byte
		wantErr  string
	}{
		{name: "unknown content is linux", part: Part{Source: raw}, wantGUID: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", wantMBR: 0x83},
		{name: "FAT16 is basic data", part: Part{Source: fat}, wantGUID: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", wantMBR: 0x0e},
		{name: "FAT32 is basic data", part: Part{Source: fat32}, wantGUID: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", wantMBR: 0x0c},
		{name: "FAT with ESP", part: Part{Source: fat}, opts: Options{ESP: true}, wantGUID: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", wantMBR: 0xef},
		{name: "override by name", part: Part{Source: fat, Type: mustType(t, "swap")}, wantGUID: "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", wantMBR: 0x82},
		{name: "override by gdisk code", part: Part{Source: raw, Type: mustType(t, "ef02")}, wantGUID: "21686148-6449-6E6F-744E-656564454649"},
		{name: "override by GUID", part: Part{Source: raw, Type: mustType(t, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709")}, wantGUID: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"},
		{name: "override by MBR ID", part: Part{Source: raw, Type: mustType(t, "0x8e")}, wantGUID: "E6D6D379-F507-44C2-A23C-238F2A3DF928", wantMBR: 0x8e},
		{name: "bios boot in MBR", part: Part{Source: raw, Type: mustType(t, "bios")}, opts: Options{Table: "mbr"}, wantErr: "partition type bios has no MBR ID"},
		{name: "GUID in MBR", part: Part{Source: raw, Type: mustType(t, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709")}, opts: Options{Table: "mbr"}, wantErr: "has no MBR ID"},
		{name: "MBR ID in GPT", part: Part{Source: raw, Type: mustType(t, "0x42")}, wantErr: "partition type 0x42 has no GPT type GUID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.part.Name = "x.img"
			d, err := New([]Part{tt.part}, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			typ := d.Partitions()[0].Type
			if typ.GUID.String() != tt.wantGUID || (tt.wantMBR != 0 && typ.MBR != tt.wantMBR) {
				t.Errorf("type = %s (GUID %s, MBR %#x), want GUID %s, MBR %#x", typ, typ.GUID, typ.MBR, tt.wantGUID, tt.wantMBR)
			}
		})
	}
}

func mustType(t *testing.T, s string) *PartType {
	t.Helper()
	pt, err := ParseType(s)
	if err != nil {
		t.Fatal(err)
	}
	return &pt
}

// emptySource is a Source of 0 bytes, which New refuses.
type emptySource struct{ sources.Source }

func (emptySource) Size() int64 { return 0 }

func TestNewErrors(t *testing.T) {
	small := func() []Part { return []Part{{Source: memPart(t, 4096, 1), Name: "a.img"}} }
	// Three sparse 1 TiB parts: 3 TiB is more than an MBR addresses.
	var huge []Part
	for i := range 3 {
		m, err := sources.NewMemory(1 << 40)
		if err != nil {
			t.Fatal(err)
		}
		huge = append(huge, Part{Source: m, Name: fmt.Sprintf("big%d.img", i)})
	}
	tests := []struct {
		name  string
		parts []Part
		opts  Options
		want  string
		is    error
	}{
		{name: "no parts", want: "no partitions", is: sources.ErrEmpty},
		{name: "empty part", parts: []Part{{Source: emptySource{}, Name: "empty.img"}}, want: "empty.img", is: sources.ErrEmpty},
		{name: "table", parts: small(), opts: Options{Table: "apm"}, want: `unknown partition table "apm" (use gpt or mbr)`},
		{name: "sector size", parts: small(), opts: Options{SectorSize: 520}, want: "sector size 520"},
		{name: "align not a power of two", parts: small(), opts: Options{Align: 3 << 20}, want: "alignment 3145728 is not a power of two"},
		{name: "align below sector", parts: small(), opts: Options{Align: 512, SectorSize: 4096}, want: "alignment 512"},
		{name: "align above 1G", parts: small(), opts: Options{Align: 2 << 30}, want: "to 1 GiB"},
		{name: "MBR too large", parts: huge, opts: Options{Table: "mbr"}, is: ErrTooLarge,
			want: "an MBR with 512-byte sectors addresses at most 2199023255552 bytes (use a GPT)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.parts, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("New = %v, want an error containing %q (is %v)", err, tt.want, tt.is)
			}
		})
	}
	// The same 3 TiB is fine with a GPT.
	d, err := New(huge, Options{})
	if err != nil {
		t.Fatalf("New(3 TiB, GPT) = %v", err)
	}
	if d.Size() < 3<<40 {
		t.Errorf("Size() = %d", d.Size())
	}
	// Its protective MBR says 0xFFFFFFFF sectors: as much as 32 bits can.
	pmbr := make([]byte, 512)
	d.ReadAt(pmbr, 0)
	if got := pmbr[mbrEntries+12 : mbrEntries+16]; !bytes.Equal(got, []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Errorf("protective MBR sector count = % x, want ff ff ff ff", got)
	}
	if got := pmbr[mbrEntries+5 : mbrEntries+8]; !bytes.Equal(got, []byte{0xfe, 0xff, 0xff}) {
		t.Errorf("protective MBR end CHS = % x, want fe ff ff", got)
	}
}

// TestDiskWrites: writes to partitions reach the files at the right
// offset; writes that would change a table fail with EIO; a read-only file
// makes its partition read-only.
func TestDiskWrites(t *testing.T) {
	dir := t.TempDir()
	a, aPath := mkfsFile(t, dir, "a.img", 1<<20)
	bPath := filepath.Join(dir, "b.img")
	os.WriteFile(bPath, bytes.Repeat([]byte{0xbb}, 1<<20), 0o644)
	b, err := sources.OpenFile(bPath, sources.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New([]Part{{Source: a, Name: "a"}, {Source: b, Name: "b"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pa, pb := d.Partitions()[0], d.Partitions()[1]
	if pa.ReadOnly || !pb.ReadOnly || d.Caps().ReadOnly {
		t.Errorf("ReadOnly: a %v, b %v, disk %v; want false, true, false", pa.ReadOnly, pb.ReadOnly, d.Caps().ReadOnly)
	}
	if _, err := d.WriteAt([]byte("hello"), pa.Start+1000); err != nil {
		t.Fatal(err)
	}
	d.Flush()
	got, _ := os.ReadFile(aPath)
	if string(got[1000:1005]) != "hello" {
		t.Errorf("a.img at 1000 = %q, want hello", got[1000:1005])
	}
	if _, err := d.WriteAt([]byte("x"), pb.Start); !errors.Is(err, syscall.EPERM) {
		t.Errorf("write to the read-only partition = %v, want EPERM", err)
	}
	hdr := make([]byte, 512)
	d.ReadAt(hdr, 512)
	if _, err := d.WriteAt(hdr, 512); err != nil {
		t.Errorf("rewriting the GPT header unchanged = %v, want nil", err)
	}
	hdr[100] ^= 0xff
	if _, err := d.WriteAt(hdr, 512); !errors.Is(err, syscall.EIO) || !errors.Is(err, sources.ErrRegionWrite) {
		t.Errorf("changing the GPT header = %v, want EIO", err)
	}
	backup := make([]byte, 512)
	if _, err := d.WriteAt(backup, d.Size()-512); !errors.Is(err, syscall.EIO) {
		t.Errorf("zeroing the backup header = %v, want EIO", err)
	}
}

// TestDiskConformance runs the conformance suite on a disk whose files are
// all read-only (the whole disk is read-only, tables included), and on
// each partition of a writable disk, whose writes go to the files.
func TestDiskConformance(t *testing.T) {
	sizes := []int64{100000, 512, 70001}
	build := func(t *testing.T, ro bool, table string) *Disk {
		dir := t.TempDir()
		var parts []Part
		for i, size := range sizes {
			path := filepath.Join(dir, fmt.Sprintf("%d.img", i))
			if err := os.WriteFile(path, bytes.Repeat([]byte{byte(i + 1), 0x5a}, int(size/2+1))[:size], 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := sources.OpenFile(path, sources.FileOptions{ReadOnly: ro})
			if err != nil {
				t.Fatal(err)
			}
			parts = append(parts, Part{Source: f, Name: path, ID: strconv.Itoa(i)})
		}
		d, err := New(parts, Options{Table: table, Align: 4096})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, table := range []string{"gpt", "mbr"} {
		t.Run(table+"/read-only", func(t *testing.T) {
			d := build(t, true, table)
			want := make([]byte, d.Size())
			d.ReadAt(want, 0)
			d.Close()
			sourcetest.Run(t, func(t *testing.T) sources.Source { return build(t, true, table) }, want)
		})
		for i, size := range sizes {
			t.Run(fmt.Sprintf("%s/partition %d", table, i+1), func(t *testing.T) {
				want := bytes.Repeat([]byte{byte(i + 1), 0x5a}, int(size/2+1))[:size]
				sourcetest.Run(t, func(t *testing.T) sources.Source {
					d := build(t, false, table)
					w, err := sources.NewWindow(d, d.Partitions()[i].Start, size)
					if err != nil {
						t.Fatal(err)
					}
					return w
				}, want)
			})
		}
	}
}

func TestDetect(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		size int64
		mkfs []string
		want string
		fat  int
	}{
		{"ext2", 8 << 20, []string{"mkfs.ext2", "-q", "-F"}, "ext2", 0},
		{"ext3", 8 << 20, []string{"mkfs.ext3", "-q", "-F"}, "ext3", 0},
		{"ext4", 8 << 20, []string{"mkfs.ext4", "-q", "-F"}, "ext4", 0},
		{"xfs", 300 << 20, []string{"mkfs.xfs", "-q"}, "xfs", 0},
		{"btrfs", 120 << 20, []string{"mkfs.btrfs", "-q"}, "btrfs", 0},
		{"swap", 1 << 20, []string{"mkswap", "-q"}, "swap", 0},
		{"fat12", 1 << 20, []string{"mkfs.vfat"}, "vfat", 12},
		{"fat16", 20 << 20, []string{"mkfs.vfat", "-F", "16"}, "vfat", 16},
		{"fat32", 40 << 20, []string{"mkfs.vfat", "-F", "32"}, "vfat", 32},
		{"zeros", 1 << 20, nil, "", 0},
		{"tiny", 100, nil, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, path := mkfsFile(t, dir, tt.name+".img", tt.size, tt.mkfs...)
			got, fat, err := Detect(f, f.Size())
			if err != nil || got != tt.want || fat != tt.fat {
				t.Errorf("Detect = %q, %d, %v; want %q, %d", got, fat, err, tt.want, tt.fat)
			}
			if tt.want != "" {
				if kv := blkid(t, path, 0, 0); kv["TYPE"] != tt.want {
					t.Errorf("blkid says %q, want %q: the test's premise is wrong", kv["TYPE"], tt.want)
				}
			}
		})
	}
}
