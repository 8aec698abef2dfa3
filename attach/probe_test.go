package attach

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
)

// compressTool writes data to dir/name through a real compressor.
func compressTool(t *testing.T, dir, name string, data []byte, tool string, args ...string) string {
	t.Helper()
	tooltest.Require(t, tool)
	raw := filepath.Join(dir, name+".raw")
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("/bin/sh", "-c", `"$0" "$@" < "$RAW" > "$OUT"`, tool)
	cmd.Args = append(cmd.Args, args...)
	cmd.Env = append(os.Environ(), "RAW="+raw, "OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", tool, args, err, b)
	}
	os.Remove(raw)
	return out
}

// openOutcome opens path as a file source and closes it again. It fails the
// test when the outcome is not the wanted one (opened, or an error), and
// returns the error.
func openOutcome(t *testing.T, path string, opts OpenOptions, wantOpen bool) error {
	t.Helper()
	op, err := OpenSource(Spec{Kind: "file", Path: path}, opts)
	if err == nil {
		op.Source.Close()
	}
	switch {
	case wantOpen && err != nil:
		t.Fatalf("OpenSource(%s, %+v) = %v", path, opts, err)
	case !wantOpen && err == nil:
		t.Fatalf("OpenSource(%s, %+v) = nil error, want one", path, opts)
	}
	return err
}

func TestOpenSourceCompressed(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir := t.TempDir()
	data := make([]byte, 2<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(data); i += 3 {
		data[i] = byte(rng.IntN(16))
	}
	tests := []struct {
		name   string
		tool   string
		args   []string
		format string
	}{
		{name: "disk.xz", tool: "xz", args: []string{"-T2", "--block-size=512KiB", "-c"}, format: "xz"},
		{name: "disk.gz", tool: "gzip", args: []string{"-c"}, format: "gzip"},
		{name: "disk.zst", tool: "zstd", args: []string{"-c"}, format: "zstd"},
		{name: "named-like-raw.img", tool: "xz", args: []string{"-c"}, format: "xz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := compressTool(t, dir, tt.name, data, tt.tool, tt.args...)
			for _, ro := range []bool{false, true} {
				op, err := OpenSource(Spec{Kind: "file", Path: path}, OpenOptions{BlockSize: 512, ReadOnly: ro})
				if err != nil {
					t.Fatalf("OpenSource(ro=%v): %v", ro, err)
				}
				if op.Format != tt.format || !op.Source.Caps().ReadOnly || op.Source.Size() != int64(len(data)) {
					t.Errorf("OpenSource(ro=%v) = format %s, caps %v, size %d; want %s, ro, %d", ro, op.Format, op.Source.Caps(), op.Source.Size(), tt.format, len(data))
				}
				note := path + ": note: " + tt.format + " images are read-only: attached read-only"
				if got := strings.Join(op.Warnings, "\n"); strings.Contains(got, note) == ro {
					t.Errorf("OpenSource(ro=%v) warnings = %q; the read-only note %q should appear only without -r", ro, got, note)
				}
				got := make([]byte, 4096)
				if _, err := op.Source.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data[1<<20:1<<20+4096]) {
					t.Errorf("ReadAt = %v, or wrong bytes", err)
				}
				if _, err := op.Source.WriteAt(got, 0); err == nil || !strings.Contains(err.Error(), "-r, or add --filter cow") {
					t.Errorf("WriteAt = %v, want the read-only error naming -r and --filter cow", err)
				}
				op.Source.Close()
			}
		})
	}
}

func TestOpenSourceCompressedErrors(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("nbdloop "), 1<<16)
	odd := compressTool(t, dir, "odd.xz", data[:1000], "xz", "-c")
	bcj := compressTool(t, dir, "bcj.xz", data, "xz", "--x86", "--lzma2", "-c")
	good := compressTool(t, dir, "good.xz", data, "xz", "-c")
	b, _ := os.ReadFile(good)
	os.WriteFile(good+".trunc", b[:len(b)-8], 0o644)
	tests := []struct {
		name string
		path string
		bs   int64
		want string
	}{
		{name: "size not a multiple of the block size", path: odd, bs: 512, want: odd + ": xz image: uncompressed size 1000 is not a multiple of 512 bytes"},
		{name: "4096-byte blocks", path: good, bs: 4096, want: ""},
		{name: "BCJ filter", path: bcj, bs: 512, want: bcj + `: xz: unsupported xz filter: the blocks use the filter chain ["x86 BCJ" "LZMA2"]; only LZMA2 alone is supported (recompress`},
		{name: "truncated", path: good + ".trunc", bs: 512, want: good + ".trunc: xz: corrupt xz data at byte 196: no stream footer magic (truncated, or not an xz file?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := openOutcome(t, tt.path, OpenOptions{BlockSize: tt.bs}, tt.want == "")
			if tt.want == "" {
				return
			}
			if !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("OpenSource = %q, want one line starting %q", err, tt.want)
			}
		})
	}
}

// TestOpenSourceImageFileOptions: qcow2 and VMDK open their files
// themselves, so the raw file's window and O_DIRECT options would be
// silently dropped; they are refused instead.
func TestOpenSourceImageFileOptions(t *testing.T) {
	tooltest.Require(t, "qemu-img")
	dir := t.TempDir()
	for _, format := range []string{"qcow2", "vmdk"} {
		img := filepath.Join(dir, "disk."+format)
		if b, err := exec.Command("qemu-img", "create", "-q", "-f", format, img, "1M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, b)
		}
		// The image inside a larger file, as --offset would find it.
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		inner := filepath.Join(dir, "inner."+format)
		if err := os.WriteFile(inner, append(make([]byte, 1<<20), b...), 0o644); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			path string
			opts OpenOptions
		}{
			{name: "direct-io", opts: OpenOptions{BlockSize: 512, DirectIO: true}},
			{name: "offset", path: inner, opts: OpenOptions{BlockSize: 512, Offset: 1 << 20}},
			{name: "sizelimit", opts: OpenOptions{BlockSize: 512, SizeLimit: 1 << 20}},
			{name: "none", opts: OpenOptions{BlockSize: 512}},
		}
		for _, tt := range tests {
			t.Run(format+"/"+tt.name, func(t *testing.T) {
				path := img
				if tt.path != "" {
					path = tt.path
				}
				err := openOutcome(t, path, tt.opts, tt.name == "none")
				if tt.name == "none" {
					return
				}
				want := path + ": " + format + " image: --offset, --sizelimit and --direct-io apply to raw and compressed files only (omit them)"
				if err.Error() != want && !(tt.name == "direct-io" && errors.Is(err, sources.ErrDirectIO)) {
					t.Errorf("OpenSource(%+v) = %q, want %q", tt.opts, err, want)
				}
			})
		}
	}
}
