package attach

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
)

// headers a guest could write to the first sector of a raw device to make
// the next attach open it as another format.
func hostileHeads(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	tooltest.Require(t, "qemu-img")
	img := filepath.Join(dir, "real.qcow2")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", img, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, b)
	}
	qcow2Head, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"vmdk descriptor":          []byte("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/passwd\" 0\n"),
		"vmdk descriptor indented": []byte("\n\n   # Disk DescriptorFile\nRW 8 FLAT \"/etc/shadow\" 0\n"),
		"vmdk sparse magic":        []byte("KDMV\x01\x00\x00\x00"),
		"qcow2 with backing file":  qcow2Head[:512],
		"xz magic":                 {0xFD, '7', 'z', 'X', 'Z', 0x00},
		"gzip magic":               {0x1F, 0x8B, 8},
		"zstd magic":               {0x28, 0xB5, 0x2F, 0xFD},
	}
}

func TestProbeGuard(t *testing.T) {
	dir := t.TempDir()
	heads := hostileHeads(t, dir)
	var logged []string
	logf := func(format string, args ...any) { logged = append(logged, format) }
	newRaw := func(t *testing.T, explicit bool) (*Opened, string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "raw.img")
		if err := os.WriteFile(path, bytes.Repeat([]byte("raw data "), 1<<20/9+1)[:1<<20], 0o644); err != nil {
			t.Fatal(err)
		}
		opts := OpenOptions{BlockSize: 512, Logf: logf}
		if explicit {
			opts.Format = "raw"
		}
		op, err := OpenSource(Spec{Kind: "file", Path: path}, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { op.Source.Close() })
		return op, path
	}
	for name, head := range heads {
		t.Run(name, func(t *testing.T) {
			op, path := newRaw(t, false)
			logged = nil
			_, err := op.Source.WriteAt(head, 0)
			var errno syscall.Errno
			if !errors.Is(err, ErrProbeGuard) || !errors.As(err, &errno) || errno != syscall.EPERM {
				t.Fatalf("write of a %s to sector 0 = %v, want EPERM (ErrProbeGuard)", name, err)
			}
			if len(logged) != 1 {
				t.Errorf("refusal logged %d lines, want 1", len(logged))
			}
			// Byte by byte: the last byte that completes the magic is refused.
			var last error
			for i := range head {
				if _, last = op.Source.WriteAt(head[i:i+1], int64(i)); last != nil {
					break
				}
			}
			if !errors.Is(last, ErrProbeGuard) {
				t.Errorf("writing the %s one byte at a time was never refused", name)
			}
			op.Source.Flush()
			after, _ := os.ReadFile(path)
			if got := probe(after[:probeLen]); got != nil {
				t.Errorf("the file now probes as %s", got.name)
			}
			// The same write with --format raw is served as data.
			op2, path2 := newRaw(t, true)
			if _, err := op2.Source.WriteAt(head, 0); err != nil {
				t.Fatalf("--format raw: write refused: %v", err)
			}
			got, _ := os.ReadFile(path2)
			if !bytes.HasPrefix(got, head) {
				t.Error("--format raw: the write did not land")
			}
		})
	}
	t.Run("ordinary writes", func(t *testing.T) {
		op, _ := newRaw(t, false)
		tests := []struct {
			name string
			do   func() error
		}{
			{"data at 0", func() error { _, err := op.Source.WriteAt(bytes.Repeat([]byte{0xEB}, 4096), 0); return err }},
			{"magic past the probed bytes", func() error { _, err := op.Source.WriteAt(heads["qcow2 with backing file"], probeLen); return err }},
			{"zero sector 0", func() error { return op.Source.Zero(0, 8192, true) }},
			{"trim sector 0", func() error { return op.Source.Trim(0, 4096) }},
			{"partial write spanning the boundary", func() error { _, err := op.Source.WriteAt(make([]byte, 8192), 2048); return err }},
		}
		for _, tt := range tests {
			if err := tt.do(); err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
		}
	})
}

func TestChooseFormat(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw.img")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "disk.qcow2")
	tooltest.Require(t, "qemu-img")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", q, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, b)
	}
	if err := os.Truncate(q, 256<<10); err != nil { // whole sectors, for --format raw
		t.Fatal(err)
	}
	qb, _ := os.ReadFile(q)
	inner := filepath.Join(dir, "inner.img")
	if err := os.WriteFile(inner, append(qb[:65536:65536], make([]byte, 1<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		opts    OpenOptions
		format  string // what it opens as
		wantErr string
	}{
		{name: "probe raw", path: raw, format: "raw"},
		{name: "probe qcow2", path: q, format: "qcow2"},
		{name: "--format raw on a qcow2", path: q, opts: OpenOptions{Format: "raw"}, format: "raw"},
		{name: "--format qcow2 on raw data", path: raw, opts: OpenOptions{Format: "qcow2"}, wantErr: "not a qcow2 image: its first bytes are raw data (omit --format"},
		{name: "--format xz on a qcow2", path: q, opts: OpenOptions{Format: "xz"}, wantErr: "not a xz image: its first bytes are a qcow2 image"},
		{name: "unknown --format", path: raw, opts: OpenOptions{Format: "vhdx"}, wantErr: "--format vhdx: unknown format (one of raw, vmdk, qcow2, xz, gzip, zstd)"},
		{name: "restart finds another format", path: q, opts: OpenOptions{ExpectFormat: "raw"}, wantErr: "now probes as qcow2, but it was attached as raw: not served"},
		{name: "restart finds the same", path: q, opts: OpenOptions{ExpectFormat: "qcow2"}, format: "qcow2"},
		{name: "--offset inside a qcow2", path: inner, opts: OpenOptions{Offset: 65536}, wantErr: "qcow2 image: --offset, --sizelimit and --direct-io apply to raw and compressed files only"},
		// A qcow2 file shorter than the offset is told -o does not
		// apply, not to be truncated to a size.
		{name: "--offset past the end of a qcow2", path: q, opts: OpenOptions{Offset: 1 << 30}, wantErr: q + ": qcow2 image: --offset, --sizelimit and --direct-io apply to raw and compressed files only (omit them)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.BlockSize = 512
			op, err := OpenSource(Spec{Kind: "file", Path: tt.path}, tt.opts)
			if tt.wantErr != "" {
				if err == nil {
					op.Source.Close()
					t.Fatalf("opened as %s, want error %q", op.Format, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer op.Source.Close()
			if op.Format != tt.format {
				t.Fatalf("opened as %s, want %s", op.Format, tt.format)
			}
		})
	}
	if _, err := OpenSource(Spec{Kind: "memory", Size: 1 << 20}, OpenOptions{BlockSize: 512, Format: "raw"}); err == nil {
		t.Error("--format on memory: accepted")
	}
	var _ sources.Source = (*probeGuard)(nil)
}

// TestProbeGuardRAMWriteRegion checks that the guard lets a server write a
// RAM file's pages itself only past the bytes it protects.
func TestProbeGuardRAMWriteRegion(t *testing.T) {
	fd, err := unix.MemfdCreate("guard-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, 1<<20); err != nil {
		t.Fatal(err)
	}
	f, err := sources.NewFile(os.NewFile(uintptr(fd), "memfd"), "memfd", sources.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := newProbeGuard(f, "memfd", nil)
	defer g.Close()
	for _, c := range []struct {
		off, n int64
		want   bool
	}{{0, 512, false}, {probeLen - 512, 1024, false}, {probeLen, 4096, true}, {1<<20 - 4096, 4096, true}, {1 << 20, 4096, false}} {
		if _, _, ok := g.RAMWriteRegion(c.off, c.n); ok != c.want {
			t.Errorf("RAMWriteRegion(%d, %d): ok %v, want %v", c.off, c.n, ok, c.want)
		}
	}
}
