package attach

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources/partitioned"
)

// compositeOpts returns the OpenOptions of an attach of sources with the
// layout given.
func compositeOpts(layout string, srcs ...string) OpenOptions {
	return OpenOptions{BlockSize: 512, Composite: Composite{Layout: layout, Sources: srcs}}
}

func readAll(t *testing.T, o *Opened) []byte {
	t.Helper()
	b := make([]byte, o.Source.Size())
	if _, err := o.Source.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenConcat(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a.img", 1000)
	b := writeFile(t, dir, "b.img", 24)
	c := writeFile(t, dir, "c.img", 3000)
	o := openSource(t, Spec{Kind: "file", Path: a}, compositeOpts(LayoutConcat, a, b, c, "memory:1000"))
	if o.Format != "concat" || o.Source.Size() != 5120 {
		t.Errorf("Format %q, Size %d; want concat, 5120", o.Format, o.Source.Size())
	}
	if want := "concat:" + a + "+" + b + "+" + c + "+memory:1000"; o.Desc != want {
		t.Errorf("Desc = %q, want %q", o.Desc, want)
	}
	var want []byte
	for _, p := range []string{a, b, c} {
		data, _ := os.ReadFile(p)
		want = append(want, data...)
	}
	want = append(want, make([]byte, 1000+96)...)
	if !bytes.Equal(readAll(t, o), want) {
		t.Errorf("the device's bytes are not the files' bytes in order")
	}
	if len(o.Warnings) != 1 || !strings.Contains(o.Warnings[0], "the files add up to 5024 bytes, not a multiple of 512: the device ends with 96 bytes of zeros") {
		t.Errorf("Warnings = %q, want the padding explained", o.Warnings)
	}
	// A write across the boundaries lands in the files.
	if _, err := o.Source.WriteAt(bytes.Repeat([]byte{'x'}, 100), 980); err != nil {
		t.Fatal(err)
	}
	o.Source.Flush()
	if got, _ := os.ReadFile(b); string(got) != strings.Repeat("x", 24) {
		t.Errorf("b.img = %q after a write across it", got)
	}
}

// xzFile compresses a file of size bytes with xz: a read-only format, which
// stands in for a file that cannot be written (the tests run as root, for
// whom permissions do not apply).
func xzFile(t *testing.T, dir, name string, size int) string {
	t.Helper()
	tooltest.Require(t, "xz")
	p := writeFile(t, dir, name, size)
	if out, err := exec.Command("xz", "-k", "--check=crc32", p).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v: %s", err, out)
	}
	return p + ".xz"
}

func TestOpenCompositeErrors(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a.img", 4096)
	b := writeFile(t, dir, "b.img", 4096)
	empty := writeFile(t, dir, "empty.img", 0)
	link := filepath.Join(dir, "link.img")
	os.Symlink(a, link)
	ro := xzFile(t, dir, "ro.img", 4096)
	big := filepath.Join(dir, "big.img")
	os.WriteFile(big, nil, 0o644)
	os.Truncate(big, 1<<40)
	tests := []struct {
		name string
		opts OpenOptions
		want string
	}{
		{name: "missing", opts: compositeOpts(LayoutPartitions, a, dir+"/missing.img"),
			want: dir + "/missing.img: no such file or directory (check the path)"},
		{name: "empty", opts: compositeOpts(LayoutPartitions, a, empty),
			want: empty + ": empty file: a partitions part needs at least one byte (give it a size: truncate -s 1G " + empty},
		{name: "same file twice", opts: compositeOpts(LayoutConcat, a, b, link),
			want: a + " and " + link + " are the same file: writes through one would change the other (attach with -r to use a file twice)"},
		{name: "concat of read-only and writable", opts: compositeOpts(LayoutConcat, a, ro),
			want: "concat: " + ro + " is a read-only format (xz), but " + a + " is writable: a file system across them would fail on some of its writes (attach with -r, or make every file writable)"},
		{name: "MBR too large", opts: func() OpenOptions {
			o := compositeOpts(LayoutPartitions, a, big, big+"x")
			o.Table = "mbr"
			return o
		}(), want: "partitions: the files add up to 3T, too large for an MBR, which addresses at most 2T with 512-byte sectors (use --table gpt)"},
		{name: "bad type for MBR", opts: func() OpenOptions {
			o := compositeOpts(LayoutPartitions, a, b)
			o.Table, o.Types = "mbr", []string{"1=bios"}
			return o
		}(), want: "partitions: a: partition type bios has no MBR ID"},
	}
	os.WriteFile(big+"x", nil, 0o644)
	os.Truncate(big+"x", 2<<40)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := OpenSource(Spec{Kind: "file", Path: tt.opts.Sources[0]}, tt.opts)
			if err == nil {
				o.Source.Close()
				t.Fatalf("OpenSource = nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("OpenSource error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
	// With -r, the same file twice is fine, and so is a read-only part.
	opts := compositeOpts(LayoutConcat, a, link, ro)
	opts.ReadOnly = true
	o := openSource(t, Spec{Kind: "file", Path: a}, opts)
	if !o.Source.Caps().ReadOnly || o.Source.Size() != 3*4096 {
		t.Errorf("concat -r: read-only %v, size %d", o.Source.Caps().ReadOnly, o.Source.Size())
	}
}

func TestOpenPartitions(t *testing.T) {
	tooltest.Require(t, "mkswap")
	dir := t.TempDir()
	boot := writeFile(t, dir, "boot.img", 8192)
	swap := writeFile(t, dir, "swap.img", 1<<20)
	if out, err := exec.Command("mkswap", swap).CombinedOutput(); err != nil {
		t.Fatalf("mkswap: %v %s", err, out)
	}
	ro := xzFile(t, dir, "data.img", 4096)
	opts := compositeOpts(LayoutPartitions, boot, swap, ro)
	opts.Types = []string{"boot.img=esp"}
	o := openSource(t, Spec{Kind: "file", Path: boot}, opts)
	if o.Format != "gpt" || !strings.HasPrefix(o.Desc, "gpt:"+boot+"+") {
		t.Errorf("Format %q, Desc %q", o.Format, o.Desc)
	}
	if o.Source.Caps().ReadOnly {
		t.Errorf("the disk is read-only with writable files")
	}
	wantWarn := ro + " is a read-only format (xz): partition 3 is read-only (writes to it fail with EPERM; mount it with -o ro)"
	if !strings.Contains(strings.Join(o.Warnings, "\n"), wantWarn) {
		t.Errorf("Warnings = %q, want %q", o.Warnings, wantWarn)
	}
	tb, err := partitioned.Read(o.Source, o.Source.Size(), 512)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range tb.Partitions {
		got = append(got, fmt.Sprintf("%d %s %s", p.Number, p.Type, p.Name))
	}
	if want := "1 esp boot|2 swap swap|3 linux data.img"; strings.Join(got, "|") != want {
		t.Errorf("partitions = %q, want %q", strings.Join(got, "|"), want)
	}
	// The same files give the same disk GUID at the next attach.
	again := openSource(t, Spec{Kind: "file", Path: boot}, opts)
	tb2, _ := partitioned.Read(again.Source, again.Source.Size(), 512)
	if tb2.GUID != tb.GUID || tb2.Partitions[0].GUID != tb.Partitions[0].GUID {
		t.Errorf("GUIDs differ between two attaches of the same files")
	}
}

// TestPartitionHints: attach warns when the kernel will not show
// partitions.
func TestPartitionHints(t *testing.T) {
	param := filepath.Join(t.TempDir(), "max_part")
	saved := maxPartParam
	maxPartParam = param
	t.Cleanup(func() { maxPartParam = saved })
	var srcs []string
	for range 257 {
		srcs = append(srcs, "memory:512")
	}
	for _, tt := range []struct {
		name     string
		maxPart  string
		n        int
		partScan bool
		want     []string
	}{
		{name: "max_part=16, 3 partitions", maxPart: "16\n", n: 3},
		{name: "max_part=16, 257 partitions", maxPart: "16\n", n: 257,
			want: []string{"partitions: warning: Linux shows at most 255 partitions of a disk: partitions 256 to 257 will have no device node"}},
		{name: "max_part=0", maxPart: "0\n", n: 2,
			want: []string{"partitions: warning: the nbd driver was loaded with max_part=0, so the kernel does not look for partitions on nbd devices by itself " +
				"(attach with -P, which makes it; or load the driver with max_part=16: modprobe -r nbd && modprobe nbd max_part=16, or boot with nbd.max_part=16)"}},
		{name: "max_part=0 with -P", maxPart: "0\n", n: 2, partScan: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			os.WriteFile(param, []byte(tt.maxPart), 0o644)
			opts := compositeOpts(LayoutPartitions, srcs[:tt.n]...)
			opts.Align = 512
			opts.partScan = tt.partScan
			o := openSource(t, Spec{Kind: "memory", Size: 512}, opts)
			if fmt.Sprint(o.Warnings) != fmt.Sprint(tt.want) {
				t.Errorf("Warnings = %q, want %q", o.Warnings, tt.want)
			}
		})
	}
}

func TestOpenPartitionView(t *testing.T) {
	tooltest.Require(t, "sgdisk", "sfdisk")
	dir := t.TempDir()
	img := writeFile(t, dir, "disk.img", 16<<20)
	if out, err := exec.Command("sgdisk", "-n", "1:0:+1M", "-n", "2:0:+3M", "-n", "5:0:+1M", img).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v %s", err, out)
	}
	mbr := writeFile(t, dir, "mbr.img", 16<<20)
	script := "label: dos\n,1M,83\n,1M,83\n,1M,83\n,+,5\n,1M,83\n,1M,82\n"
	cmd := exec.Command("sfdisk", "-q", mbr)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v %s", err, out)
	}
	blank := writeFile(t, dir, "blank.img", 1<<20)
	os.WriteFile(blank, make([]byte, 1<<20), 0o644)
	whole, _ := os.ReadFile(img)
	view := func(path string, n int) OpenOptions {
		return OpenOptions{BlockSize: 512, Composite: Composite{Partition: n}}
	}
	o := openSource(t, Spec{Kind: "file", Path: img}, view(img, 2))
	if o.Source.Size() != 3<<20 || o.Desc != img+":p2" || o.Format != "raw" {
		t.Errorf("partition 2: size %d, desc %q, format %q", o.Source.Size(), o.Desc, o.Format)
	}
	if got := readAll(t, o); !bytes.Equal(got, whole[3<<20:6<<20]) {
		t.Errorf("partition 2 does not hold bytes 3M..6M of the image")
	}
	o = openSource(t, Spec{Kind: "file", Path: mbr}, view(mbr, 6))
	if o.Source.Size() != 1<<20 {
		t.Errorf("logical partition 6: size %d", o.Source.Size())
	}
	for _, tt := range []struct {
		path string
		n    int
		want string
	}{
		{img, 3, img + ": no partition 3: its GPT has 1, 2, 5 (--partition 1)"},
		{mbr, 9, mbr + ": no partition 9: its MBR has 1, 2, 3, 4, 5, 6 (--partition 1)"},
		{mbr, 4, mbr + ": partition 4 is the extended partition; it holds the logical partitions 5, 6"},
		{blank, 1, blank + ": no partition table (MBR or GPT) to find partition 1 in (for a byte range use --offset and --sizelimit)"},
	} {
		_, err := OpenSource(Spec{Kind: "file", Path: tt.path}, view(tt.path, tt.n))
		if err == nil || err.Error() != tt.want {
			t.Errorf("--partition %d %s: error = %v, want %q", tt.n, filepath.Base(tt.path), err, tt.want)
		}
	}
}

func TestValidateComposite(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(c *Config)
		wantErr string
	}{
		{name: "concat", edit: func(c *Config) { c.Layout, c.Sources = LayoutConcat, []string{"a.img", "b.img"} }},
		{name: "partitions with options", edit: func(c *Config) {
			c.Layout, c.Sources = LayoutPartitions, []string{"a.img", "b.img", "c.img", "d.img", "e.img"}
			c.Table, c.Align, c.Types, c.ESP = "mbr", 4096, []string{"1=esp", "5=0x83", "c.img=swap", "e.img=8e00"}, true
		}},
		{name: "several SOURCEs without a layout", edit: func(c *Config) { c.Sources = []string{"a.img", "b.img"} },
			wantErr: "2 SOURCEs need --concat or --partitions"},
		{name: "unknown layout", edit: func(c *Config) { c.Layout = "stripe" }, wantErr: `unknown layout "stripe"`},
		{name: "table without partitions", edit: func(c *Config) { c.Table = "mbr" },
			wantErr: "--table, --align, --type and --esp apply to --partitions"},
		{name: "esp with concat", edit: func(c *Config) { c.Layout, c.Sources, c.ESP = LayoutConcat, []string{"a.img"}, true },
			wantErr: "--table, --align, --type and --esp apply to --partitions"},
		{name: "bad table", edit: func(c *Config) { c.Layout, c.Sources, c.Table = LayoutPartitions, []string{"a.img"}, "apm" },
			wantErr: `--table "apm": use gpt or mbr`},
		{name: "align not a power of two", edit: func(c *Config) { c.Layout, c.Sources, c.Align = LayoutPartitions, []string{"a.img"}, 3000 },
			wantErr: "--align 3000: must be a power of two from the block size (512) to 1G"},
		{name: "align below the block size", edit: func(c *Config) {
			c.Layout, c.Sources, c.Align, c.BlockSize = LayoutPartitions, []string{"a.img"}, 512, 4096
		}, wantErr: "--align 512: must be a power of two from the block size (4096)"},
		{name: "type without =", edit: func(c *Config) { c.Layout, c.Sources, c.Types = LayoutPartitions, []string{"a.img"}, []string{"swap"} },
			wantErr: `--type "swap": want N=TYPE or FILE=TYPE (e.g. 2=swap)`},
		{name: "unknown type", edit: func(c *Config) {
			c.Layout, c.Sources, c.Types = LayoutPartitions, []string{"a.img"}, []string{"1=fat64"}
		},
			wantErr: `--type 1=fat64: unknown partition type "fat64" (use linux, swap, esp, msdata, bios, lvm, raid, luks, home, a gdisk code`},
		{name: "type of a missing partition", edit: func(c *Config) {
			c.Layout, c.Sources, c.Types = LayoutPartitions, []string{"a.img", "b.img"}, []string{"3=swap"}
		}, wantErr: "--type 3=swap: no partition 3 (the disk will have 1, 2)"},
		{name: "type of the extended partition", edit: func(c *Config) {
			c.Layout, c.Sources, c.Table, c.Types = LayoutPartitions, []string{"a", "b", "c", "d", "e"}, "mbr", []string{"4=swap"}
		}, wantErr: "--type 4=swap: no partition 4 (the disk will have 1, 2, 3, 5, 6; 4 is the extended partition)"},
		{name: "type of an unknown file", edit: func(c *Config) {
			c.Layout, c.Sources, c.Types = LayoutPartitions, []string{"a.img"}, []string{"b.img=swap"}
		}, wantErr: "--type b.img=swap: b.img is neither a partition number nor one of the SOURCEs"},
		{name: "two types for one partition", edit: func(c *Config) {
			c.Layout, c.Sources, c.Types = LayoutPartitions, []string{"a.img"}, []string{"1=swap", "a.img=linux"}
		}, wantErr: "--type a.img=linux: partition 1 has a type already"},
		{name: "concat with offset", edit: func(c *Config) { c.Layout, c.Sources, c.Offset = LayoutConcat, []string{"a.img"}, 512 },
			wantErr: "--concat: --offset and --sizelimit apply to a single SOURCE"},
		{name: "partitions with partition", edit: func(c *Config) { c.Layout, c.Sources, c.Partition = LayoutPartitions, []string{"a.img"}, 2 },
			wantErr: "--partitions: --partition applies to a single SOURCE"},
		{name: "partition with sizelimit", edit: func(c *Config) { c.Partition, c.SizeLimit = 2, 4096 },
			wantErr: "--partition and --offset/--sizelimit exclude each other"},
		{name: "bad second SOURCE", edit: func(c *Config) { c.Layout, c.Sources = LayoutConcat, []string{"a.img", "memory:0"} },
			wantErr: "memory:0: size must be greater than 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConfig("a.img")
			tt.edit(&c)
			if len(c.Sources) > 0 {
				c.Source = c.Sources[0]
			}
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
