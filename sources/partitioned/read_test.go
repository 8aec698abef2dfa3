package partitioned

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// TestReadRoundTrip: Read gives back what New built.
func TestReadRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		n    int
		opts Options
	}{
		{name: "gpt one", n: 1, opts: Options{}},
		{name: "gpt three", n: 3, opts: Options{Align: 4096}},
		{name: "gpt 200", n: 200, opts: Options{Align: 512}},
		{name: "gpt 4K sectors", n: 3, opts: Options{SectorSize: 4096}},
		{name: "mbr four", n: 4, opts: Options{Table: "mbr", Align: 512}},
		{name: "mbr seven", n: 7, opts: Options{Table: "mbr"}},
		{name: "mbr 60 logicals", n: 63, opts: Options{Table: "mbr", Align: 512}},
		{name: "mbr 4K sectors", n: 6, opts: Options{Table: "mbr", SectorSize: 4096}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var parts []Part
			for i := range tt.n {
				parts = append(parts, Part{Source: memPart(t, int64(1000+i*777), uint64(i)), Name: fmt.Sprintf("part %d", i+1)})
			}
			d, err := New(parts, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			ss := max(tt.opts.SectorSize, 512)
			tb, err := Read(d, d.Size(), ss)
			if err != nil {
				t.Fatalf("Read = %v", err)
			}
			if len(tb.Warnings) > 0 {
				t.Errorf("Read warnings: %q", tb.Warnings)
			}
			want := d.Partitions()
			if d.Extended() != nil {
				want = append(want[:3:3], append([]Partition{*d.Extended()}, want[3:]...)...)
			}
			if len(tb.Partitions) != len(want) {
				t.Fatalf("Read: %d partitions, want %d", len(tb.Partitions), len(want))
			}
			for i, w := range want {
				g := tb.Partitions[i]
				w.Content, w.ReadOnly = "", false
				if tb.Kind == "mbr" {
					w.GUID, w.Name = GUID{}, ""
				}
				if fmt.Sprint(g) != fmt.Sprint(w) {
					t.Errorf("partition %d:\n got %+v\nwant %+v", i+1, g, w)
				}
			}
			if tb.Kind != d.Table() || tb.SectorSize != ss || (tb.Kind == "gpt" && tb.GUID != d.GUID()) || (tb.Kind == "mbr" && tb.DiskID != d.DiskID()) {
				t.Errorf("Read = kind %s, sectors %d, GUID %s, ID %08x", tb.Kind, tb.SectorSize, tb.GUID, tb.DiskID)
			}
		})
	}
}

// TestReadToolImages reads tables that sgdisk and sfdisk wrote, and
// compares with what sfdisk reads.
func TestReadToolImages(t *testing.T) {
	lookTool(t, "sgdisk")
	lookTool(t, "sfdisk")
	tests := []struct {
		name  string
		build func(t *testing.T, img string)
	}{
		{name: "sgdisk", build: func(t *testing.T, img string) {
			tool(t, "sgdisk", "-n", "1:0:+1M", "-t", "1:ef00", "-c", "1:EFI system", "-n", "2:0:+2M", "-t", "2:8200",
				"-n", "5:0:+1M", "-c", "5:five", "-n", "3:0:0", img)
		}},
		{name: "sfdisk dos with logicals", build: func(t *testing.T, img string) {
			script := "label: dos\n,1M,83\n,1M,82\n,10M,5\n,1M,83\n,2M,8e\n,1M,83\n"
			cmd := fmt.Sprintf("printf '%s' | sfdisk -q %s", strings.ReplaceAll(script, "\n", "\\n"), img)
			tool(t, "/bin/sh", "-c", cmd)
		}},
		{name: "sfdisk dos sparse primaries", build: func(t *testing.T, img string) {
			tool(t, "/bin/sh", "-c", "printf 'label: dos\\n1: start=2048, size=2048, type=c\\n3: start=8192, size=4096, type=83, bootable\\n' | sfdisk -q "+img)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			os.Truncate(img, 32<<20)
			tt.build(t, img)
			f, err := sources.OpenFile(img, sources.FileOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tb, err := Read(f, f.Size(), 512)
			if err != nil {
				t.Fatalf("Read = %v", err)
			}
			st := sfdiskJSON(t, img).PartitionTable
			var got, want []string
			for _, p := range tb.Partitions {
				typ := p.Type.GUID.String()
				if tb.Kind == "mbr" {
					typ = fmt.Sprintf("%x", p.Type.MBR)
				}
				got = append(got, fmt.Sprintf("%d %d %d %s %q", p.Number, p.Start/512, p.Size/512, typ, p.Name))
			}
			for _, p := range st.Partitions {
				n := strings.TrimPrefix(p.Node, img)
				want = append(want, fmt.Sprintf("%s %d %d %s %q", n, p.Start, p.Size, strings.ToUpper(p.Type), p.Name))
			}
			if tb.Kind == "mbr" {
				for i := range want {
					want[i] = strings.ToLower(want[i])
				}
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("Read:\n%s\nsfdisk --json:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if want := map[string]string{"dos": "mbr", "gpt": "gpt"}[st.Label]; tb.Kind != want {
				t.Errorf("Kind = %s, want %s", tb.Kind, want)
			}
		})
	}
}

// TestReadDamagedGPT: a damaged primary GPT is replaced by the backup,
// with a warning; with both damaged, Read fails.
func TestReadDamagedGPT(t *testing.T) {
	var parts []Part
	for i := range 3 {
		parts = append(parts, Part{Source: memPart(t, 4096, uint64(i)), Name: "p"})
	}
	d, err := New(parts, Options{Align: 4096})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, d.Size())
	d.ReadAt(img, 0)
	tests := []struct {
		name    string
		damage  func(b []byte)
		warning string
		err     string
	}{
		{name: "primary header CRC", damage: func(b []byte) { b[512+40]++ }, warning: "the primary GPT is damaged (invalid GPT header: header CRC32"},
		{name: "primary entries", damage: func(b []byte) { b[1024+60]++ }, warning: "entry array CRC32"},
		{name: "primary signature", damage: func(b []byte) { b[512]++ }, warning: "no \"EFI PART\" signature); using the backup"},
		{name: "both signatures", damage: func(b []byte) { b[512]++; b[len(b)-512]++ }, err: "protective one (type 0xee) but there is no GPT header"},
		{name: "both headers", damage: func(b []byte) { b[512+40]++; b[len(b)-512+40]++ }, err: "header CRC32"},
		{name: "entry count", damage: func(b []byte) {
			b[512+80], b[512+81], b[512+82] = 0, 0, 1 // 65536 entries and a wrong CRC
		}, warning: "using the backup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := append([]byte(nil), img...)
			tt.damage(b)
			tb, err := Read(bytesReader(b), int64(len(b)), 512)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Read = %v, want an error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read = %v", err)
			}
			if len(tb.Warnings) != 1 || !strings.Contains(tb.Warnings[0], tt.warning) {
				t.Errorf("Warnings = %q, want one containing %q", tb.Warnings, tt.warning)
			}
			if len(tb.Partitions) != 3 || tb.Partitions[2].Start != d.Partitions()[2].Start {
				t.Errorf("Partitions = %+v", tb.Partitions)
			}
		})
	}
}

type bytesReader []byte

func (b bytesReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, errors.New("EOF")
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, errors.New("EOF")
	}
	return n, nil
}

func TestReadNoTable(t *testing.T) {
	for _, size := range []int64{100, 512, 1 << 20} {
		m, _ := sources.NewMemory(size)
		if _, err := Read(m, size, 512); !errors.Is(err, ErrNoTable) {
			t.Errorf("Read(%d zero bytes) = %v, want ErrNoTable", size, err)
		}
	}
}

func TestOpenPartition(t *testing.T) {
	var parts []Part
	for i := range 6 {
		parts = append(parts, Part{Source: memPart(t, 3000, uint64(i)), Name: "p"})
	}
	mbr, err := New(parts, Options{Table: "mbr", Align: 4096})
	if err != nil {
		t.Fatal(err)
	}
	gpt, err := New(parts[:3], Options{Align: 4096})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		disk  sources.Source
		n     int
		start int64
		err   string
	}{
		{name: "gpt 2", disk: gpt, n: 2, start: gpt.Partitions()[1].Start},
		{name: "mbr logical 6", disk: mbr, n: 6, start: mbr.Partitions()[4].Start},
		{name: "gpt missing", disk: gpt, n: 4, err: "no partition 4: the GPT table has 1, 2, 3"},
		{name: "mbr missing", disk: mbr, n: 8, err: "no partition 8: the MBR table has 1, 2, 3, 4, 5, 6, 7"},
		{name: "mbr extended", disk: mbr, n: 4, err: "partition 4 is the extended partition; it holds the logical partitions 5, 6, 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, p, _, err := OpenPartition(tt.disk, tt.n, 512)
			if tt.err != "" {
				var npe *NoPartitionError
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("OpenPartition(%d) = %v, want an error containing %q", tt.n, err, tt.err)
				}
				if strings.HasPrefix(tt.name, "gpt missing") && !errors.As(err, &npe) {
					t.Errorf("error %T, want *NoPartitionError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Start != tt.start || w.Size() != p.Size || p.Size != 3072 {
				t.Errorf("partition %d at %d, %d bytes; want %d, 3072", tt.n, p.Start, w.Size(), tt.start)
			}
			got := make([]byte, 3000)
			w.ReadAt(got, 0)
			want := make([]byte, 3000)
			parts[map[int]int{2: 1, 6: 4}[tt.n]].Source.ReadAt(want, 0)
			if string(got) != string(want) {
				t.Errorf("partition %d does not hold its file's bytes", tt.n)
			}
		})
	}
	// A truncated image: the last partition reaches past its end.
	img := make([]byte, gpt.Size())
	gpt.ReadAt(img, 0)
	short, _ := sources.NewMemory(gpt.Partitions()[2].Start + 1024)
	short.WriteAt(img[:short.Size()], 0)
	if _, _, _, err := OpenPartition(short, 3, 512); err == nil || !strings.Contains(err.Error(), "reaches past the end of the disk") {
		t.Errorf("OpenPartition(truncated, 3) = %v, want past the end", err)
	}
	if _, _, _, err := OpenPartition(short, 1, 512); err != nil {
		t.Errorf("OpenPartition(truncated, 1) = %v, want nil (the primary GPT is intact)", err)
	}
}
