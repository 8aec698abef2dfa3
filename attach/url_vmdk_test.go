package attach

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/nginxtest"
	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// TestOpenVMDKURL: VMDK images on nginx, attached by URL read-only: a
// hosted sparse file alone (monolithicSparse, streamOptimized), and
// descriptors whose extents (twoGbMaxExtentSparse, monolithicFlat, in a
// subdirectory) and parent (a delta disk) are read by relative URL; each
// reads as qemu-img convert -O raw of it. A name that leads out of the
// descriptor's directory is refused.
func TestOpenVMDKURL(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	tooltest.Require(t, "qemu-img", "qemu-io")
	ng := nginxtest.Start(t, t.TempDir())
	root := ng.Root
	qemu := func(tool string, args ...string) {
		t.Helper()
		if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", tool, args, err, out)
		}
	}
	data := make([]byte, 6<<20)
	for i := range data {
		data[i] = byte(i*13/4096 + i%7)
	}
	clear(data[2<<20 : 3<<20]) // a hole: unallocated grains
	raw := filepath.Join(t.TempDir(), "disk.raw")
	os.WriteFile(raw, data, 0o644)
	os.Mkdir(filepath.Join(root, "sub"), 0o755)
	for name, sub := range map[string]string{
		"mono.vmdk": "monolithicSparse", "stream.vmdk": "streamOptimized",
		"sub/split.vmdk": "twoGbMaxExtentSparse", "sub/flat.vmdk": "monolithicFlat",
	} {
		qemu("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+sub, raw, filepath.Join(root, name))
	}
	qemu("qemu-img", "create", "-q", "-f", "vmdk", "-b", "mono.vmdk", "-F", "vmdk", filepath.Join(root, "delta.vmdk"))
	qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 1M 64k", filepath.Join(root, "delta.vmdk"))
	deltaRaw := filepath.Join(t.TempDir(), "delta.raw")
	qemu("qemu-img", "convert", "-O", "raw", filepath.Join(root, "delta.vmdk"), deltaRaw)
	delta, _ := os.ReadFile(deltaRaw)
	os.WriteFile(filepath.Join(root, "sub", "out.vmdk"), []byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRDONLY 12288 FLAT \"flat-flat.vmdk\" 0\nRDONLY 12288 FLAT \"../mono.vmdk\" 0\n"), 0o644)

	for _, tt := range []struct {
		name string
		want []byte
	}{
		{"mono.vmdk", data}, {"stream.vmdk", data}, {"sub/split.vmdk", data}, {"sub/flat.vmdk", data}, {"delta.vmdk", delta},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := ng.URL + "/" + tt.name
			op, err := OpenSource(Spec{Kind: KindURL, Path: url}, OpenOptions{BlockSize: 512})
			if err != nil {
				t.Fatal(err)
			}
			defer op.Source.Close()
			if op.Format != "vmdk" || !op.Source.Caps().ReadOnly || !strings.HasPrefix(op.Pin, "etag:") {
				t.Errorf("format %q, caps %v, pin %q; want vmdk, read-only, nginx's ETag", op.Format, op.Source.Caps(), op.Pin)
			}
			if got := readAll(t, op); !bytes.Equal(got, tt.want) {
				t.Error("the device's bytes differ from qemu-img convert's")
			}
		})
	}
	t.Run("refused out.vmdk", func(t *testing.T) {
		op, err := OpenSource(Spec{Kind: KindURL, Path: ng.URL + "/sub/out.vmdk"}, OpenOptions{BlockSize: 512})
		if err == nil {
			op.Source.Close()
			t.Fatal("OpenSource succeeded")
		}
		if want := `"../mono.vmdk" (` + ng.URL + `/mono.vmdk): outside ` + ng.URL + `/sub/`; !strings.Contains(err.Error(), want) {
			t.Errorf("OpenSource = %q, want %q", err, want)
		}
	})
}
