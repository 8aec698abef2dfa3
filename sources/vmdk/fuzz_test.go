package vmdk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// tinySparse builds a small hosted sparse extent the way qemu lays one out
// (header, embedded descriptor, redundant directory and tables, directory
// and tables, grains), with tiny grains and tables so that fuzz inputs stay
// small: capacity and grain in sectors, gtes entries per table. Grain i
// holds fill(i) when fill returns data, and is left unallocated otherwise.
func tinySparse(capacity, grain uint64, gtes uint32, flags uint32, desc string, fill func(i int) []byte) []byte {
	nGrains := (capacity + grain - 1) / grain
	nGT := (nGrains + uint64(gtes) - 1) / uint64(gtes)
	gtSectors := (uint64(gtes)*4 + 511) / 512
	gdSectors := (nGT*4 + 511) / 512
	descSectors := uint64((len(desc) + 511) / 512)
	rgd := 1 + descSectors
	gd := rgd + gdSectors + nGT*gtSectors
	overhead := gd + gdSectors + nGT*gtSectors
	h := make([]byte, 512)
	copy(h, "KDMV")
	le := binary.LittleEndian
	le.PutUint32(h[4:], 1)
	le.PutUint32(h[8:], flags|flagNewlineTest)
	le.PutUint64(h[12:], capacity)
	le.PutUint64(h[20:], grain)
	if desc != "" {
		le.PutUint64(h[28:], 1)
		le.PutUint64(h[36:], descSectors)
	}
	le.PutUint32(h[44:], gtes)
	le.PutUint64(h[48:], rgd)
	le.PutUint64(h[56:], gd)
	le.PutUint64(h[64:], overhead)
	copy(h[73:], "\n \r\n")
	file := make([]byte, overhead*512)
	copy(file, h)
	copy(file[512:], desc)
	for _, dir := range []uint64{rgd, gd} {
		for t := range nGT {
			gt := dir + gdSectors + t*gtSectors
			le.PutUint32(file[dir*512+t*4:], uint32(gt))
		}
	}
	for i := range int(nGrains) {
		b := fill(i)
		if b == nil {
			continue
		}
		sector := uint64(len(file) / 512)
		g := make([]byte, grain*512)
		copy(g, b)
		file = append(file, g...)
		t, k := uint64(i)/uint64(gtes), uint64(i)%uint64(gtes)
		for _, dir := range []uint64{rgd, gd} {
			gt := dir + gdSectors + t*gtSectors
			le.PutUint32(file[gt*512+k*4:], uint32(sector))
		}
	}
	return file
}

const tinyDesc = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\nRW 64 SPARSE \"t.vmdk\"\n"

// tinySeeds are small images (a few KiB: the fuzzer slows down on large
// inputs) with allocated and unallocated grains, several tables, grains of
// 1 to 4 sectors, with and without the redundant directory and zeroed
// grains.
func tinySeeds() [][]byte {
	fill := func(i int) []byte {
		if i%3 != 0 {
			return nil
		}
		return bytes.Repeat([]byte{byte(i + 1)}, 100)
	}
	return [][]byte{
		tinySparse(16, 1, 4, flagRGD, tinyDesc, fill),
		tinySparse(16, 2, 4, flagRGD|flagZeroGrain, tinyDesc, fill),
		tinySparse(13, 4, 2, 0, tinyDesc, fill),
	}
}

func TestTinySparseMatchesQemu(t *testing.T) {
	// The seed builder is checked against qemu, so that the fuzz seeds are
	// real images.
	for i, b := range tinySeeds() {
		p := filepath.Join(t.TempDir(), "t.vmdk")
		os.WriteFile(p, b, 0o644)
		qemuImg(t, "check", p)
		d := mustOpen(t, p, Options{ReadOnly: true})
		compareReaders(t, d, openFile(t, qemuRaw(t, p)), d.Size())
		if i == 0 && d.desc.CID != 0x12345678 {
			t.Errorf("CID = %x", d.desc.CID)
		}
	}
}

// FuzzVMDKDescriptor: no panic, and what parses keeps the invariants the
// opener relies on.
func FuzzVMDKDescriptor(f *testing.F) {
	f.Add([]byte(tinyDesc))
	f.Add([]byte("# Disk DescriptorFile\r\nversion=1\r\nCID=9b287c1\r\nparentCID=ffffffff\r\ncreateType=\"twoGbMaxExtentFlat\"\r\n" +
		"RW 4194304 FLAT \"t-f001.vmdk\" 0\r\nRDONLY 100 FLAT \"with space.vmdk\" 7\r\nRW 10 ZERO\r\nNOACCESS 5 SPARSE \"s.vmdk\"\r\n" +
		"ddb.geometry.heads = \"16\"\r\n"))
	f.Add([]byte("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\nparentFileNameHint=\"base.vmdk\"\nRW 8 SPARSE \"top.vmdk\"\n\x00\x00"))
	for _, s := range extremeDescriptors() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseDescriptor(data)
		if err != nil {
			return
		}
		if len(d.Extents) > maxExtents {
			t.Fatalf("%d extents", len(d.Extents))
		}
		var total int64
		for _, e := range d.Extents {
			if e.Sectors <= 0 || e.Offset < 0 {
				t.Fatalf("extent %+v", e)
			}
			if (e.Type == "ZERO") != (e.File == "") {
				t.Fatalf("extent %+v: file name and type disagree", e)
			}
			total += e.Sectors
			if total < 0 || total > maxDiskSectors {
				t.Fatalf("extents overflow: %d", total)
			}
		}
		if d.Size() != total*sectorSize {
			t.Fatalf("Size() = %d, want %d", d.Size(), total*sectorSize)
		}
	})
}

// FuzzVMDKHeader feeds arbitrary files to Open through the sparse header:
// no panic, no allocation sized by an unchecked field, and reads of what
// opens either succeed or fail with an error.
func FuzzVMDKHeader(f *testing.F) {
	for _, s := range tinySeeds() {
		f.Add(s)
	}
	for _, s := range extremeHeaders() {
		f.Add(s)
	}
	p := filepath.Join(f.TempDir(), "f.vmdk") // one worker runs one input at a time
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := parseHeader(data); err == nil {
			if h.grainSize == 0 || h.grainSize > maxGrainSectors || h.gdEntries() > maxGDEntries {
				t.Fatalf("header accepted with grain %d, %d directory entries", h.grainSize, h.gdEntries())
			}
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b := sources.NewBudget(8 << 20)
		d, err := Open(p, Options{ReadOnly: true, CacheSize: 1 << 20, Budget: b})
		if err != nil {
			if b.Used() != 0 {
				t.Fatalf("a failed Open left %d bytes charged", b.Used())
			}
			return
		}
		buf := make([]byte, min(d.Size(), 256<<10))
		d.ReadAt(buf, 0)
		d.ReadAt(buf, d.Size()-int64(len(buf)))
		d.Close()
		if b.Used() != 0 {
			t.Fatalf("Close left %d bytes charged", b.Used())
		}
	})
}

// FuzzVMDKGrainTable keeps a valid header and fuzzes everything after it:
// descriptor, directories, tables and grains, then reads, writes, zeros and
// trims: nothing may panic or hang. (Writes need not read back: a hostile
// table may point two grains, or a grain and a table, at the same sector.)
func FuzzVMDKGrainTable(f *testing.F) {
	for _, s := range tinySeeds() {
		f.Add(s[512:])
	}
	hdr := tinySparse(16, 1, 4, flagRGD|flagZeroGrain, tinyDesc, func(int) []byte { return nil })[:512]
	for _, s := range extremeTables(hdr) {
		f.Add(s)
	}
	p := filepath.Join(f.TempDir(), "f.vmdk")
	f.Fuzz(func(t *testing.T, rest []byte) {
		if len(rest) > 1<<20 {
			return
		}
		if err := os.WriteFile(p, append(append([]byte(nil), hdr...), rest...), 0o644); err != nil {
			t.Fatal(err)
		}
		b := sources.NewBudget(8 << 20)
		d, err := Open(p, Options{CacheSize: 1 << 20, Budget: b})
		if err != nil {
			if b.Used() != 0 {
				t.Fatalf("a failed Open left %d bytes charged", b.Used())
			}
			return
		}
		defer func() {
			d.Close()
			if b.Used() != 0 {
				t.Fatalf("Close left %d bytes charged", b.Used())
			}
		}()
		all := make([]byte, d.Size())
		d.ReadAt(all, 0)
		w := bytes.Repeat([]byte{0x5a}, 700)
		for _, off := range []int64{0, 1000, d.Size() - 700} {
			d.WriteAt(w, off)
		}
		d.Zero(512, 4096, true)
		d.Trim(0, d.Size())
		d.ReadAt(all, 0)
	})
}

// extremes are the values every numeric field is tried at: 0, 1, max-1,
// max, and around the powers of 2 where products and sums wrap.
var extremes = []uint64{0, 1, 2, 1<<32 - 1, 1 << 32, 1<<32 + 1, 1<<54 - 1, 1 << 54, 1 << 55, 1<<63 - 1, 1 << 63, 1<<64 - 2, 1<<64 - 1}

// extremeDescriptors are descriptors with extent sizes and offsets at the
// extremes, sums that pass 2^63, and names that lead outside.
func extremeDescriptors() []string {
	var out []string
	head := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
	for _, v := range extremes {
		out = append(out,
			head+fmt.Sprintf("RW %d FLAT \"f\" 0\n", v),
			head+fmt.Sprintf("RW 8 FLAT \"f\" %d\n", v),
			head+fmt.Sprintf("RW %d FLAT \"f\" %d\n", v, v),
			head+fmt.Sprintf("RW %d ZERO\nRW %d ZERO\n", v, v))
	}
	out = append(out,
		head+"RW 18014398509481983 ZERO\nRW 1 ZERO\n",
		head+"RW 9007199254740992 ZERO\nRW 9007199254740992 ZERO\n",
		head+"RW 8 FLAT \"../../etc/shadow\" 0\n",
		head+"RW 8 FLAT \"/etc/shadow\" 0\nRDONLY 8 SPARSE \"/dev/zero\"\n",
		head+"parentFileNameHint=\"../../etc/passwd\"\nRW 8 SPARSE \"a b\"\n",
		head+"CID=ffffffffff\nRW 8 ZERO\n",
		head+"version=2147483648\nRW 8 ZERO\n",
		head+strings.Repeat("RW 1 ZERO\n", 64),
		head+"RW 8 FLAT \"f\" 0 0\nRW 8 FLAT \"unterminated\n",
		head+"RW 8 SPARSE \"\"\n"+strings.Repeat("\n", 200)+"RW 8 ZERO\r\n")
	return out
}

// extremeHeaders are sparse extents with each header field at the
// extremes, and pairs of fields whose sum or product wraps.
func extremeHeaders() [][]byte {
	var out [][]byte
	for _, v := range extremes {
		for _, off := range []int{hCapacity, hGrain, hDescOffset, hDescSize, hRGD, hGD, 64} {
			out = append(out, kdmv(le64(off, v)))
		}
		out = append(out, kdmv(le32(hNumGTEs, uint32(v))))
	}
	pair := func(a, b func([]byte)) []byte { return kdmv(func(h []byte) { a(h); b(h) }) }
	out = append(out,
		pair(le64(hDescOffset, 1), le64(hDescSize, 1<<55+1)),
		pair(le64(hDescOffset, 1<<55), le64(hDescSize, 1)),
		pair(le64(hDescOffset, 1<<64-1), le64(hDescSize, 2)),
		pair(le64(hCapacity, 1<<32), le64(hGrain, 1)),
		pair(le64(hCapacity, 1<<32), le64(hGrain, 2048)),
		pair(le64(hCapacity, 1<<32), le32(hNumGTEs, 1)),
		pair(le64(hGD, 1<<64-1), le64(hRGD, 1<<64-1)),
		pair(le64(hGD, 1<<55), le64(hRGD, 1<<55)),
		pair(le32(8, flagNewlineTest|flagCompressed|flagMarkers), func(h []byte) { binary.LittleEndian.PutUint16(h[77:], compressDeflate) }),
		pair(le32(4, 3), le32(8, flagNewlineTest|flagZeroGrain|flagRGD)),
		pair(le32(4, 1<<32-1), le32(8, 1<<32-1)),
	)
	return out
}

// extremeTables are the bytes after hdr (see FuzzVMDKGrainTable) with grain
// directory entries and GTEs at the extremes.
func extremeTables(hdr []byte) [][]byte {
	base := tinySparse(16, 1, 4, flagRGD|flagZeroGrain, tinyDesc, func(i int) []byte {
		if i%2 == 0 {
			return []byte{byte(i)}
		}
		return nil
	})
	le := binary.LittleEndian
	rgd, gd := le.Uint64(hdr[hRGD:]), le.Uint64(hdr[hGD:])
	var out [][]byte
	for _, v := range []uint32{0, 1, 2, 1<<31 - 1, 1 << 31, 1<<32 - 2, 1<<32 - 1} {
		for _, at := range []uint64{rgd * 512, gd * 512, uint64(le.Uint32(base[gd*512:])) * 512, uint64(le.Uint32(base[gd*512+4:]))*512 + 12} {
			b := append([]byte(nil), base...)
			le.PutUint32(b[at:], v)
			out = append(out, b[512:])
		}
	}
	return out
}
