package attach

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// TestOpenSourceConfined: what attach passes to the formats: files that an
// image names are confined to its directory unless --allow-path widens it,
// and the metadata limit is the device's.
func TestOpenSourceConfined(t *testing.T) {
	top := t.TempDir()
	dir, outside := filepath.Join(top, "images"), filepath.Join(top, "outside")
	os.Mkdir(dir, 0o755)
	os.Mkdir(outside, 0o755)
	base := filepath.Join(outside, "base.raw")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tooltest.Require(t, "qemu-img")
	qemuImg := func(args ...string) {
		if b, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v: %s", args, err, b)
		}
	}
	overlay := filepath.Join(dir, "overlay.qcow2")
	qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay)
	flat := filepath.Join(dir, "flat.vmdk")
	desc := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 2048 FLAT \"../outside/base.raw\" 0\n"
	if err := os.WriteFile(flat, []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.qcow2")
	qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", big, "64G") // a 1 GiB L1 table
	tests := []struct {
		name    string
		path    string
		opts    OpenOptions
		wantErr string
	}{
		{name: "qcow2 backing outside", path: overlay, opts: OpenOptions{ReadOnly: true}, wantErr: "allow its directory with --allow-path " + outside},
		{name: "qcow2 backing allowed", path: overlay, opts: OpenOptions{ReadOnly: true, AllowPaths: []string{outside}}},
		{name: "vmdk extent outside", path: flat, wantErr: "--allow-path"},
		{name: "vmdk extent allowed, read-only", path: flat, opts: OpenOptions{ReadOnly: true, AllowPaths: []string{outside}}},
		{name: "metadata over the limit", path: big, opts: OpenOptions{ReadOnly: true, MetadataLimit: 1 << 20}, wantErr: "--metadata-limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.BlockSize = 512
			op, err := OpenSource(Spec{Kind: "file", Path: tt.path}, tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				op.Source.Close()
				return
			}
			if err == nil {
				op.Source.Close()
				t.Fatalf("opened, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line containing %q", err, tt.wantErr)
			}
		})
	}
}
