package vmdk

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

func TestParseDescriptor(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *Descriptor
		wantErr string
	}{
		{
			name: "qemu twoGbMaxExtentFlat, CRLF",
			in: "# Disk DescriptorFile\r\nversion=1\r\nCID=9b287c1\r\nparentCID=ffffffff\r\ncreateType=\"twoGbMaxExtentFlat\"\r\n\r\n" +
				"# Extent description\r\nRW 4194304 FLAT \"t-f001.vmdk\" 0\r\nRW 10 FLAT \"t-f002.vmdk\" 0\r\n\r\nddb.adapterType = \"ide\"\r\n",
			want: &Descriptor{Version: 1, CID: 0x9b287c1, ParentCID: NoParent, CreateType: "twoGbMaxExtentFlat", Extents: []ExtentDesc{
				{Access: "RW", Sectors: 4194304, Type: "FLAT", File: "t-f001.vmdk"},
				{Access: "RW", Sectors: 10, Type: "FLAT", File: "t-f002.vmdk"},
			}},
		},
		{
			name: "delta, spaces in names, every access, ZERO, NUL padding",
			in: "# Disk DescriptorFile\nversion=1\nCID=00000002\nparentCID=00000001\ncreateType=\"monolithicSparse\"\nparentFileNameHint=\"my base.vmdk\"\n" +
				"RW 100 SPARSE \"my top.vmdk\"\nRDONLY 8 FLAT \"raw disk\" 16\nRW 4 ZERO\nNOACCESS 2 VMFS \"v\"\n\x00\x00garbage",
			want: &Descriptor{Version: 1, CID: 2, ParentCID: 1, CreateType: "monolithicSparse", ParentFileNameHint: "my base.vmdk", Extents: []ExtentDesc{
				{Access: "RW", Sectors: 100, Type: "SPARSE", File: "my top.vmdk"},
				{Access: "RDONLY", Sectors: 8, Type: "FLAT", File: "raw disk", Offset: 16},
				{Access: "RW", Sectors: 4, Type: "ZERO"},
				{Access: "NOACCESS", Sectors: 2, Type: "VMFS", File: "v"},
			}},
		},
		{name: "bad CID", in: "CID=xyz\n", wantErr: "not a 32-bit hexadecimal"},
		{name: "bad version", in: "version=9\n", wantErr: "version 9"},
		{name: "zero sectors", in: "RW 0 FLAT \"f\" 0\n", wantErr: "sector count"},
		{name: "negative sectors", in: "RW -5 FLAT \"f\" 0\n", wantErr: "sector count"},
		{name: "unknown type", in: "RW 5 WEIRD \"f\"\n", wantErr: "unknown type"},
		{name: "offset on sparse", in: "RW 5 SPARSE \"f\" 3\n", wantErr: "only FLAT"},
		{name: "unclosed quote", in: "RW 5 FLAT \"f 0\n", wantErr: "closing quote"},
		{name: "ZERO with file", in: "RW 5 ZERO \"f\"\n", wantErr: "no file"},
		{name: "no file", in: "RW 5 FLAT\n", wantErr: "without a file"},
		{name: "overflow", in: "RW 18014398509481983 ZERO\nRW 18014398509481983 ZERO\n", wantErr: "2^63"},
		{name: "junk line", in: "# Disk DescriptorFile\nhello world\n", wantErr: "neither key=value"},
		{name: "too many extents", in: strings.Repeat("RW 1 ZERO\n", maxExtents+1), wantErr: "more than 4096 extents"},
		{name: "too big", in: strings.Repeat("#", maxDescriptorSize+1), wantErr: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDescriptor([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDescriptor() = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseDescriptor() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseHeader(t *testing.T) {
	valid := tinySparse(16, 1, 4, flagRGD, "", func(int) []byte { return nil })[:512]
	le := binary.LittleEndian
	tests := []struct {
		name    string
		edit    func(b []byte)
		wantErr string
	}{
		{"valid", func(b []byte) {}, ""},
		{"magic", func(b []byte) { b[0] = 'X' }, "no KDMV"},
		{"version 4", func(b []byte) { le.PutUint32(b[4:], 4) }, "version 4"},
		{"unknown incompatible flag", func(b []byte) { le.PutUint32(b[8:], 1<<20) }, "incompatible flags"},
		{"newline check damaged", func(b []byte) { b[75] = '\n' }, "newline check"},
		{"grain not a power of 2", func(b []byte) { le.PutUint64(b[20:], 3) }, "grain size"},
		{"grain too big", func(b []byte) { le.PutUint64(b[20:], 4096) }, "grain size"},
		{"no GTEs", func(b []byte) { le.PutUint32(b[44:], 0) }, "entries per grain table"},
		{"too many GTEs", func(b []byte) { le.PutUint32(b[44:], 513) }, "entries per grain table"},
		{"capacity 0", func(b []byte) { le.PutUint64(b[12:], 0) }, "capacity"},
		{"capacity past 2 TiB", func(b []byte) { le.PutUint64(b[12:], 1<<32+1) }, "capacity"},
		{"directory too big", func(b []byte) { le.PutUint64(b[12:], 1<<32); le.PutUint32(b[44:], 1) }, "grain directory"},
		{"compressed without deflate", func(b []byte) { le.PutUint32(b[8:], flagCompressed|flagNewlineTest) }, "compression"},
		{"unknown compression", func(b []byte) { le.PutUint16(b[77:], 7) }, "compression"},
		{"descriptor too big", func(b []byte) { le.PutUint64(b[36:], 4096) }, "embedded descriptor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := append([]byte(nil), valid...)
			tt.edit(b)
			_, err := parseHeader(b)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("parseHeader() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parseHeader() = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}
