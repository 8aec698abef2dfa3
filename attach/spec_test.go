package attach

import (
	"bytes"
	"errors"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
)

var parseSpecTests = []struct {
	name    string
	in      string
	want    Spec
	wantErr string // substring of the error; "" means no error
}{
	{name: "path", in: "disk.img", want: Spec{Kind: "file", Path: "disk.img"}},
	{name: "absolute path", in: "/var/lib/images/disk.img", want: Spec{Kind: "file", Path: "/var/lib/images/disk.img"}},
	{name: "block device", in: "/dev/sdb", want: Spec{Kind: "file", Path: "/dev/sdb"}},
	{name: "path with colon", in: "/srv/a:b.img", want: Spec{Kind: "file", Path: "/srv/a:b.img"}},
	{name: "file prefix", in: "file:disk.img", want: Spec{Kind: "file", Path: "disk.img"}},
	{name: "file prefix with colon", in: "file:a:b.img", want: Spec{Kind: "file", Path: "a:b.img"}},
	{name: "file named like a memory spec", in: "file:memory:1G", want: Spec{Kind: "file", Path: "memory:1G"}},
	{name: "nbd URL", in: "nbd://host:10809/export", want: Spec{Kind: "nbd", Path: "nbd://host:10809/export", Remote: nbd.URI{Network: "tcp", Address: "host:10809", Export: "export"}}},
	{name: "nbd URL, default port and export", in: "nbd://host", want: Spec{Kind: "nbd", Path: "nbd://host:10809/", Remote: nbd.URI{Network: "tcp", Address: "host:10809"}}},
	{name: "nbd+unix URL", in: "nbd+unix:///export?socket=/tmp/s", want: Spec{Kind: "nbd", Path: "nbd+unix:///export?socket=/tmp/s", Remote: nbd.URI{Network: "unix", Address: "/tmp/s", Export: "export"}}},
	{name: "nbds URL", in: "nbds://host/export", want: Spec{Kind: "nbd", Path: "nbds://host:10809/export", Remote: nbd.URI{Network: "tcp", Address: "host:10809", Export: "export", TLS: true}}},
	{name: "nbds+unix URL", in: "nbds+unix:///e?tls-hostname=server.test&socket=/tmp/s&tls-certificates=/etc/pki/c",
		want: Spec{Kind: "nbd", Path: "nbds+unix:///e?socket=/tmp/s&tls-certificates=/etc/pki/c&tls-hostname=server.test",
			Remote: nbd.URI{Network: "unix", Address: "/tmp/s", Export: "e", TLS: true, TLSCertificates: "/etc/pki/c", TLSHostname: "server.test"}}},
	{name: "nbds PSK", in: "nbds://host/export?tls-psk-file=/k", wantErr: "nbds://host/export?tls-psk-file=/k: tls-psk-file: only X.509 certificates are supported for TLS (tls-certificates=DIR)"},
	{name: "nbd+unix without socket", in: "nbd+unix:///e", wantErr: "nbd+unix:///e: no socket given (nbd+unix:///e?socket=PATH)"},
	{name: "nbd URL bad port", in: "nbd://h:0/e", wantErr: "nbd://h:0/e: port 0 is out of range (1-65535)"},
	{name: "https URL", in: "https://example.com/disk.img", want: Spec{Kind: "url", Path: "https://example.com/disk.img"}},
	{name: "http URL", in: "http://10.0.0.1:8080/images/disk.img.xz?v=2", want: Spec{Kind: "url", Path: "http://10.0.0.1:8080/images/disk.img.xz?v=2"}},
	{name: "HTTPS URL", in: "HTTPS://example.com/disk.img", want: Spec{Kind: "url", Path: "HTTPS://example.com/disk.img"}},
	{name: "URL with credentials", in: "https://me:secret@example.com/disk.img", wantErr: "https://me:xxxxx@example.com/disk.img: credentials in the URL are refused: they would be kept in the device's state record and shown by nbdloop list"},
	{name: "URL without host", in: "https:///disk.img", wantErr: "no host in the URL"},
	{name: "ftp URL", in: "ftp://example.com/disk.img", wantErr: "ftp://example.com/disk.img: ftp:// URLs are not supported (SOURCE is a PATH, file:PATH, memory:SIZE, exec:PATH, an http(s):// URL, s3://BUCKET/KEY, nbd[s]://HOST[:PORT]/EXPORT or nbd[s]+unix:///EXPORT?socket=PATH)"},
	{name: "file named like a URL", in: "file:https://x", want: Spec{Kind: "file", Path: "https://x"}},
	{name: "path with :// not a scheme", in: "./a://b", want: Spec{Kind: "file", Path: "./a://b"}},
	{name: "path starting with ://", in: "://b", want: Spec{Kind: "file", Path: "://b"}},
	{name: "file named like a file spec", in: "file:file:x", want: Spec{Kind: "file", Path: "file:x"}},
	{name: "unknown prefix is a path", in: "nbd:disk", want: Spec{Kind: "file", Path: "nbd:disk"}},
	{name: "memory 1G", in: "memory:1G", want: Spec{Kind: "memory", Size: 1 << 30}},
	{name: "memory bytes", in: "memory:4096", want: Spec{Kind: "memory", Size: 4096}},
	{name: "memory 1000-based", in: "memory:1GB", want: Spec{Kind: "memory", Size: 1e9}},
	{name: "memory not block aligned", in: "memory:1000", want: Spec{Kind: "memory", Size: 1000}},
	{name: "memory max int64", in: "memory:9223372036854775807", want: Spec{Kind: "memory", Size: math.MaxInt64}},
	{name: "memory 8E clamped", in: "memory:8E", want: Spec{Kind: "memory", Size: math.MaxInt64, Clamped: true}},
	{name: "memory 1Z clamped", in: "memory:1Z", want: Spec{Kind: "memory", Size: math.MaxInt64, Clamped: true}},
	{name: "memory 0", in: "memory:0", wantErr: "memory:0: size must be greater than 0"},
	{name: "memory empty", in: "memory:", wantErr: "memory:: empty size"},
	{name: "memory bad suffix", in: "memory:12Q", wantErr: `memory:12Q: unknown suffix "Q"`},
	{name: "memory negative", in: "memory:-1", wantErr: "memory:-1: not a size"},
	{name: "memory fraction", in: "memory:1.5G", wantErr: "memory:1.5G: unknown suffix"},
	{name: "empty", in: "", wantErr: "no source given"},
	{name: "file prefix without path", in: "file:", wantErr: "file:: no path given"},
}

func TestParseSpec(t *testing.T) {
	for _, tt := range parseSpecTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseSpec(%q) = %#v, nil, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParseSpec(%q) error = %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSpec(%q) error = %v, want nil", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseSpec(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSpecString(t *testing.T) {
	tests := []struct {
		name string
		in   Spec
		want string
	}{
		{name: "path", in: Spec{Kind: "file", Path: "disk.img"}, want: "disk.img"},
		{name: "path with colon", in: Spec{Kind: "file", Path: "a:b"}, want: "a:b"},
		{name: "path like a URL", in: Spec{Kind: "file", Path: "https://x"}, want: "file:https://x"},
		{name: "nbd", in: Spec{Kind: "nbd", Path: "nbd://h/e", Remote: nbd.URI{Network: "tcp", Address: "h:10809", Export: "e"}}, want: "nbd://h:10809/e"},
		{name: "nbd+unix", in: Spec{Kind: "nbd", Remote: nbd.URI{Network: "unix", Address: "/run/s", Export: "e"}}, want: "nbd+unix:///e?socket=/run/s"},
		{name: "path like memory", in: Spec{Kind: "file", Path: "memory:1G"}, want: "file:memory:1G"},
		{name: "path like file", in: Spec{Kind: "file", Path: "file:x"}, want: "file:file:x"},
		{name: "memory", in: Spec{Kind: "memory", Size: 1 << 30}, want: "memory:1073741824"},
		{name: "URL", in: Spec{Kind: "url", Path: "https://x/disk.img"}, want: "https://x/disk.img"},
		{name: "memory clamped", in: Spec{Kind: "memory", Size: math.MaxInt64, Clamped: true}, want: "memory:9223372036854775807"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.String(); got != tt.want {
				t.Errorf("%#v.String() = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzSpec checks that every spec ParseSpec accepts renders, with String, to
// a spec that parses to the same thing. Clamped records how the input was
// written (a size above 2^63-1), which String does not keep: the round trip
// must give the same device, not the same warning.
func FuzzSpec(f *testing.F) {
	for _, tt := range parseSpecTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		spec, err := ParseSpec(in)
		if err != nil {
			return
		}
		switch spec.Kind {
		case "file":
			if spec.Path == "" {
				t.Fatalf("ParseSpec(%q) = %#v, want a non-empty path", in, spec)
			}
		case "memory":
			if spec.Size <= 0 {
				t.Fatalf("ParseSpec(%q) = %#v, want a positive size", in, spec)
			}
		case "exec":
			if spec.Path == "" {
				t.Fatalf("ParseSpec(%q) = %#v, want a non-empty program", in, spec)
			}
		case "nbd":
			if spec.Remote.Network != "tcp" && spec.Remote.Network != "unix" || spec.Remote.Address == "" || spec.Path != spec.Remote.String() {
				t.Fatalf("ParseSpec(%q) = %#v, want a TCP or Unix address and the URI as the path", in, spec)
			}
		case "url":
			if u, err := url.Parse(spec.Path); spec.Path != in || err != nil || u.User != nil {
				t.Fatalf("ParseSpec(%q) = %#v, want the URL as given, without credentials", in, spec)
			}
		default:
			t.Fatalf("ParseSpec(%q) = %#v, want kind file, memory, exec, nbd or url", in, spec)
		}
		s := spec.String()
		again, err := ParseSpec(s)
		if err != nil {
			t.Fatalf("ParseSpec(%q) error = %v; the spec came from ParseSpec(%q) = %#v", s, err, in, spec)
		}
		if again.Clamped {
			t.Errorf("ParseSpec(%q) = %#v, want Clamped false for a canonical spec", s, again)
		}
		spec.Clamped = false
		if again != spec {
			t.Errorf("ParseSpec(%q) = %#v, want %#v (from ParseSpec(%q))", s, again, spec, in)
		}
		if s2 := again.String(); s2 != s {
			t.Errorf("String() = %q after a round trip, want %q", s2, s)
		}
	})
}

// writeFile creates name in dir with size bytes of a repeating pattern and
// returns its path.
func writeFile(t *testing.T, dir, name string, size int) string {
	t.Helper()
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + i/512)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func openSource(t *testing.T, spec Spec, opts OpenOptions) *Opened {
	t.Helper()
	o, err := OpenSource(spec, opts)
	if err != nil {
		t.Fatalf("OpenSource(%#v, %+v) error = %v, want nil", spec, opts, err)
	}
	t.Cleanup(func() { o.Source.Close() })
	return o
}

func TestOpenSourceRawFile(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "disk.img", 1<<20)
	o := openSource(t, Spec{Kind: "file", Path: p}, OpenOptions{BlockSize: 512})
	if o.Format != "raw" {
		t.Errorf("Format = %q, want %q", o.Format, "raw")
	}
	if o.Desc != p {
		t.Errorf("Desc = %q, want %q", o.Desc, p)
	}
	if len(o.Warnings) != 0 {
		t.Errorf("Warnings = %q, want none", o.Warnings)
	}
	if got := o.Source.Size(); got != 1<<20 {
		t.Errorf("Size() = %d, want %d", got, 1<<20)
	}
	if o.Source.Caps().ReadOnly {
		t.Errorf("Caps().ReadOnly = true, want false")
	}
	want, _ := os.ReadFile(p)
	got := make([]byte, 4096)
	if _, err := o.Source.ReadAt(got, 8192); err != nil {
		t.Fatalf("ReadAt(off=8192, len=4096) error = %v", err)
	}
	if !bytes.Equal(got, want[8192:8192+4096]) {
		t.Errorf("ReadAt(off=8192, len=4096) returned other bytes than the file holds")
	}
}

func TestOpenSourceRelativePathDesc(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "disk.img", 4096)
	t.Chdir(dir)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	o := openSource(t, Spec{Kind: "file", Path: "disk.img"}, OpenOptions{BlockSize: 512})
	if want := filepath.Join(wd, "disk.img"); o.Desc != want {
		t.Errorf("Desc = %q, want %q", o.Desc, want)
	}
}

func TestOpenSourceFileErrors(t *testing.T) {
	dir := t.TempDir()
	odd := writeFile(t, dir, "odd.img", 1000)
	empty := writeFile(t, dir, "empty.img", 0)
	small := writeFile(t, dir, "small.img", 3*512)
	window := writeFile(t, dir, "window.img", 4096+100)
	missing := filepath.Join(dir, "missing.img")
	tests := []struct {
		name     string
		path     string
		opts     OpenOptions
		wantErr  string // substring of the error
		is       error  // when set, errors.Is(err, is) must hold
		pathOnce bool   // the error names the path exactly once
	}{
		{
			name:    "size not a multiple of 512",
			path:    odd,
			opts:    OpenOptions{BlockSize: 512},
			wantErr: odd + ": size 1000 is not a multiple of 512 bytes (round it up: truncate -s %512 " + odd,
		},
		{
			name:    "size not a multiple of 4096",
			path:    small,
			opts:    OpenOptions{BlockSize: 4096},
			wantErr: small + ": size 1536 is not a multiple of 4096 bytes (round it up: truncate -s %4096 " + small,
		},
		{
			name:    "window not a multiple of 512",
			path:    window,
			opts:    OpenOptions{BlockSize: 512, Offset: 512},
			wantErr: window + ": size of the window 3684 is not a multiple of 512 bytes",
		},
		{
			name:    "empty file",
			path:    empty,
			opts:    OpenOptions{BlockSize: 512},
			wantErr: empty + ": empty, no bytes to serve (truncate it to the size wanted, e.g. truncate -s 1G " + empty + ")",
		},
		{
			name:    "empty file with an offset",
			path:    empty,
			opts:    OpenOptions{BlockSize: 512, Offset: 1 << 30},
			wantErr: empty + ": empty, no bytes at --offset 1073741824 (truncate it to the size wanted, past the offset: truncate -s SIZE " + empty + ")",
		},
		{
			name:    "offset past the end",
			path:    small,
			opts:    OpenOptions{BlockSize: 512, Offset: 1 << 30},
			wantErr: small + ": the file (1536 bytes) is smaller than --offset 1073741824 (give an offset inside the file)",
		},
		{
			name:    "offset at the end",
			path:    small,
			opts:    OpenOptions{BlockSize: 512, Offset: 1536},
			wantErr: small + ": the file (1536 bytes) ends at --offset 1536 (give an offset inside the file)",
		},
		{
			name:    "window of a file whose end is not a multiple",
			path:    odd,
			opts:    OpenOptions{BlockSize: 512, SizeLimit: 1024},
			wantErr: odd + ": size of the window 1000 is not a multiple of 512 bytes (round it up: truncate -s %512 " + odd + ", or serve less: --sizelimit 512)",
		},
		{
			name:     "missing file",
			path:     missing,
			opts:     OpenOptions{BlockSize: 512},
			wantErr:  missing + ": no such file or directory (check the path)",
			is:       fs.ErrNotExist,
			pathOnce: true,
		},
		{
			name:     "directory",
			path:     dir,
			opts:     OpenOptions{BlockSize: 512},
			wantErr:  dir + ": is a directory (give a file or a block device)",
			pathOnce: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := OpenSource(Spec{Kind: "file", Path: tt.path}, tt.opts)
			if err == nil {
				o.Source.Close()
				t.Fatalf("OpenSource(%q, %+v) error = nil, want one containing %q", tt.path, tt.opts, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("OpenSource(%q) error = %q, want it to contain %q", tt.path, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("OpenSource(%q) error = %q, want one line", tt.path, err)
			}
			if n := strings.Count(err.Error(), tt.path); tt.pathOnce && n != 1 {
				t.Errorf("OpenSource(%q) error = %q names the path %d times, want once", tt.path, err, n)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("OpenSource(%q) error = %v, want errors.Is(err, %v)", tt.path, err, tt.is)
			}
		})
	}
}

func TestOpenSourceWindow(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "disk.img", 8192)
	want, _ := os.ReadFile(p)
	tests := []struct {
		name     string
		opts     OpenOptions
		wantSize int64
	}{
		{name: "offset", opts: OpenOptions{BlockSize: 512, Offset: 1024}, wantSize: 8192 - 1024},
		{name: "sizelimit", opts: OpenOptions{BlockSize: 512, SizeLimit: 2048}, wantSize: 2048},
		{name: "offset and sizelimit", opts: OpenOptions{BlockSize: 512, Offset: 1024, SizeLimit: 2048}, wantSize: 2048},
		{name: "sizelimit past the end", opts: OpenOptions{BlockSize: 512, Offset: 4096, SizeLimit: 1 << 20}, wantSize: 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := openSource(t, Spec{Kind: "file", Path: p}, tt.opts)
			if got := o.Source.Size(); got != tt.wantSize {
				t.Fatalf("Size() = %d, want %d", got, tt.wantSize)
			}
			got := make([]byte, 512)
			if _, err := o.Source.ReadAt(got, 0); err != nil {
				t.Fatalf("ReadAt(off=0, len=512) error = %v", err)
			}
			if wantB := want[tt.opts.Offset : tt.opts.Offset+512]; !bytes.Equal(got, wantB) {
				t.Errorf("ReadAt(off=0, len=512) = % x..., want % x... (file bytes at offset %d)", got[:8], wantB[:8], tt.opts.Offset)
			}
		})
	}
}

func TestOpenSourceReadOnlyFile(t *testing.T) {
	p := writeFile(t, t.TempDir(), "disk.img", 4096)
	o := openSource(t, Spec{Kind: "file", Path: p}, OpenOptions{BlockSize: 512, ReadOnly: true})
	if !o.Source.Caps().ReadOnly {
		t.Errorf("Caps().ReadOnly = false, want true")
	}
	if _, err := o.Source.WriteAt(make([]byte, 512), 0); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("WriteAt(off=0, len=512) error = %v, want %v", err, sources.ErrReadOnly)
	}
}

func TestOpenSourceMemory(t *testing.T) {
	tests := []struct {
		name      string
		spec      string
		blockSize int64
		wantSize  int64
		wantDesc  string
		wantWarns []string
	}{
		{name: "aligned", spec: "memory:1M", blockSize: 512, wantSize: 1 << 20, wantDesc: "memory:1048576"},
		{name: "rounded down", spec: "memory:1000", blockSize: 512, wantSize: 512, wantDesc: "memory:512",
			wantWarns: []string{"memory:1000: size rounded down to 512 bytes, a multiple of the 512-byte block size"}},
		{name: "rounded down to 4096", spec: "memory:10000", blockSize: 4096, wantSize: 8192, wantDesc: "memory:8192",
			wantWarns: []string{"memory:10000: size rounded down to 8192 bytes, a multiple of the 4096-byte block size"}},
		{name: "1000-based", spec: "memory:1MB", blockSize: 512, wantSize: 999936, wantDesc: "memory:999936",
			wantWarns: []string{"memory:1000000: size rounded down to 999936 bytes, a multiple of the 512-byte block size"}},
		{name: "clamped", spec: "memory:8E", blockSize: 512, wantSize: math.MaxInt64 - 511, wantDesc: "memory:9223372036854775296",
			wantWarns: []string{
				"memory: size clamped to the maximum, 9223372036854775807 bytes",
				"memory:9223372036854775807: size rounded down to 9223372036854775296 bytes, a multiple of the 512-byte block size",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := ParseSpec(tt.spec)
			if err != nil {
				t.Fatalf("ParseSpec(%q) error = %v", tt.spec, err)
			}
			o := openSource(t, spec, OpenOptions{BlockSize: tt.blockSize})
			if got := o.Source.Size(); got != tt.wantSize {
				t.Errorf("Size() = %d, want %d", got, tt.wantSize)
			}
			if o.Format != "memory" {
				t.Errorf("Format = %q, want %q", o.Format, "memory")
			}
			if o.Desc != tt.wantDesc {
				t.Errorf("Desc = %q, want %q", o.Desc, tt.wantDesc)
			}
			if strings.Join(o.Warnings, "\n") != strings.Join(tt.wantWarns, "\n") {
				t.Errorf("Warnings = %q, want %q", o.Warnings, tt.wantWarns)
			}
			// The last block is usable.
			buf := []byte("last block")
			if _, err := o.Source.WriteAt(buf, o.Source.Size()-512); err != nil {
				t.Errorf("WriteAt(off=%d, len=%d) error = %v, want nil", o.Source.Size()-512, len(buf), err)
			}
		})
	}
}

func TestOpenSourceMemorySmallerThanBlock(t *testing.T) {
	_, err := OpenSource(Spec{Kind: "memory", Size: 100}, OpenOptions{BlockSize: 512})
	want := "memory:100: smaller than one 512-byte block (give a larger size)"
	if err == nil || err.Error() != want {
		t.Errorf("OpenSource(memory:100) error = %v, want %q", err, want)
	}
	_, err = OpenSource(Spec{Kind: "memory", Size: 4000}, OpenOptions{BlockSize: 4096})
	want = "memory:4000: smaller than one 4096-byte block (give a larger size)"
	if err == nil || err.Error() != want {
		t.Errorf("OpenSource(memory:4000, block size 4096) error = %v, want %q", err, want)
	}
}

func TestOpenSourceMemoryReadOnly(t *testing.T) {
	o := openSource(t, Spec{Kind: "memory", Size: 1 << 20}, OpenOptions{BlockSize: 512, ReadOnly: true})
	src := o.Source
	if !src.Caps().ReadOnly {
		t.Errorf("Caps().ReadOnly = false, want true")
	}
	if _, err := src.WriteAt(make([]byte, 512), 0); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("WriteAt(off=0, len=512) error = %v, want %v", err, sources.ErrReadOnly)
	}
	if err := src.Trim(0, 512); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("Trim(0, 512) error = %v, want %v", err, sources.ErrReadOnly)
	}
	if err := src.Zero(0, 512, true); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("Zero(0, 512, true) error = %v, want %v", err, sources.ErrReadOnly)
	}
	if err := src.Flush(); err != nil {
		t.Errorf("Flush() error = %v, want nil", err)
	}
	buf := bytes.Repeat([]byte{0xff}, 512)
	if n, err := src.ReadAt(buf, 4096); n != 512 || err != nil {
		t.Fatalf("ReadAt(off=4096, len=512) = %d, %v, want 512, nil", n, err)
	}
	if !bytes.Equal(buf, make([]byte, 512)) {
		t.Errorf("ReadAt(off=4096, len=512) returned non-zero bytes from a fresh RAM disk")
	}
	if got := src.Size(); got != 1<<20 {
		t.Errorf("Size() = %d, want %d", got, 1<<20)
	}
}
