package attach

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// serveFiles serves the files of dir with ranges and ETags (as a web
// server does); etag, when it changes, replaces every object.
func serveFiles(t *testing.T, dir string, etag *atomic.Value) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(filepath.Join(dir, filepath.Base(r.URL.Path)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", etag.Load().(string))
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// urlImages writes the images that the URL tests serve into a temporary
// directory, and returns it with the bytes they hold: data (disk.img and
// its xz, gzip and zstd forms), topRaw (the chain top.qcow2 over
// base.qcow2) and whole (gpt.img, two partitions).
func urlImages(t *testing.T) (dir string, data, topRaw, whole []byte) {
	t.Helper()
	tooltest.Require(t, "sgdisk")
	dir = t.TempDir()
	data = make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7 / 4096)
	}
	os.WriteFile(filepath.Join(dir, "disk.img"), data, 0o644)
	compressTool(t, dir, "disk.img.xz", data, "xz", "--block-size=512KiB", "-c")
	compressTool(t, dir, "disk.img.gz", data, "gzip", "-c")
	compressTool(t, dir, "disk.img.zst", data, "zstd", "-c")
	os.WriteFile(filepath.Join(dir, "odd.img"), data[:1000], 0o644)
	os.WriteFile(filepath.Join(dir, "disk.vmdk"), []byte("# Disk DescriptorFile\nversion=1\n"), 0o644)
	// A qcow2 image whose backing file is the qcow2 image next to it, and
	// one whose backing name leads out of the directory.
	tooltest.Require(t, "qemu-img", "qemu-io")
	qemu := func(tool string, args ...string) {
		t.Helper()
		if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", tool, args, err, out)
		}
	}
	qemu("qemu-img", "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "disk.img"), filepath.Join(dir, "base.qcow2"))
	qemu("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(dir, "top.qcow2"))
	qemu("qemu-io", "-c", "write -P 0x5a 1M 64k", "-c", "write -P 0xa5 4000k 96k", filepath.Join(dir, "top.qcow2"))
	qemu("qemu-img", "convert", "-O", "raw", filepath.Join(dir, "top.qcow2"), filepath.Join(dir, "top.raw"))
	topRaw, _ = os.ReadFile(filepath.Join(dir, "top.raw"))
	qemu("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "../base.qcow2", "-F", "qcow2", filepath.Join(dir, "out.qcow2"), "4M")
	gpt := filepath.Join(dir, "gpt.img")
	os.WriteFile(gpt, data, 0o644)
	if out, err := exec.Command("sgdisk", "-n", "1:0:+1M", "-n", "2:0:+1M", gpt).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v %s", err, out)
	}
	whole, _ = os.ReadFile(gpt)
	return dir, data, topRaw, whole
}

func TestOpenSourceURL(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir, data, topRaw, whole := urlImages(t)
	var etag atomic.Value
	etag.Store(`"one"`)
	base := serveFiles(t, dir, &etag)

	tests := []struct {
		name   string
		opts   OpenOptions
		format string
		want   []byte
		note   string // a warning line
	}{
		{name: "disk.img", format: "raw", want: data, note: "objects by URL are read-only: attached read-only (add --filter cow"},
		{name: "disk.img.xz", format: "xz", want: data, note: "xz images are read-only"},
		{name: "disk.img.gz", format: "gzip", want: data, note: "gzip images are read-only"},
		{name: "disk.img.zst", format: "zstd", want: data, note: "zstd images are read-only"},
		{name: "disk.img.xz", opts: OpenOptions{ReadOnly: true}, format: "xz", want: data},
		{name: "gpt.img", opts: OpenOptions{Composite: Composite{Partition: 2}}, format: "raw", want: whole[2<<20 : 3<<20], note: "objects by URL are read-only"},
		{name: "top.qcow2", format: "qcow2", want: topRaw, note: "objects by URL are read-only: attached read-only (add --filter cow"},
		{name: "top.qcow2", opts: OpenOptions{ReadOnly: true}, format: "qcow2", want: topRaw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := checkOpened(t, base+"/"+tt.name, tt.opts, tt.format, tt.want, tt.note)
			if op.Pin != `etag:"one"` {
				t.Errorf("pin %q, want the ETag", op.Pin)
			}
		})
	}

	for _, tt := range []struct {
		name string
		opts OpenOptions
		want string
	}{
		{"disk.vmdk", OpenOptions{}, "/disk.vmdk: vmdk: http://"},
		{"out.qcow2", OpenOptions{}, `/out.qcow2: qcow2: backing file of http://`},
		{"out.qcow2", OpenOptions{}, `"../base.qcow2" (http://`},
		{"top.qcow2", OpenOptions{Offset: 512}, "--offset and --sizelimit do not apply to qcow2 images"},
		{"odd.img", OpenOptions{}, "/odd.img: size 1000 is not a multiple of 512 bytes"},
		{"missing.img", OpenOptions{}, "/missing.img: the server answered 404 Not Found"},
		{"disk.img", OpenOptions{Format: "xz"}, "/disk.img: not a xz image: its first bytes are raw data"},
		{"disk.img", OpenOptions{ExpectPin: `etag:"zero"`}, `/disk.img: the object changed on the server since it was attached (it was etag:"zero", it is etag:"one" now)`},
	} {
		t.Run("refused "+tt.name, func(t *testing.T) {
			tt.opts.BlockSize = 512
			op, err := OpenSource(Spec{Kind: KindURL, Path: base + "/" + tt.name}, tt.opts)
			if err == nil {
				op.Source.Close()
				t.Fatal("OpenSource succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("OpenSource = %q, want one line with %q", err, tt.want)
			}
		})
	}
}

// checkOpened opens url with opts (512-byte blocks) and checks what it
// opens as: format, read-only, the warning note ("": none), a pin, and the
// bytes want. It returns the Opened, closed when the test ends.
func checkOpened(t *testing.T, url string, opts OpenOptions, format string, want []byte, note string) *Opened {
	t.Helper()
	opts.BlockSize = 512
	op, err := OpenSource(Spec{Kind: KindURL, Path: url}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Source.Close() })
	desc := url
	if opts.Partition > 0 {
		desc += ":p" + strconv.Itoa(opts.Partition)
	}
	if op.Format != format || op.Desc != desc || op.Pin == "" || !op.Source.Caps().ReadOnly {
		t.Errorf("format %q, desc %q, pin %q, caps %v; want %s, %s, a pin, ro", op.Format, op.Desc, op.Pin, op.Source.Caps(), format, desc)
	}
	if w := strings.Join(op.Warnings, "\n"); !strings.Contains(w, note) || (note == "" && w != "") {
		t.Errorf("warnings %q, want %q", w, note)
	}
	if got := readAll(t, op); !bytes.Equal(got, want) {
		t.Errorf("the device's bytes differ from the original")
	}
	return op
}
