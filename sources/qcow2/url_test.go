package qcow2

import (
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/httpsrc"
)

// serveDir serves the files beneath root with Go's file server (range
// requests and Last-Modified by http.ServeContent) and returns its URL.
func serveDir(t *testing.T, root string) string {
	t.Helper()
	s := httptest.NewServer(http.FileServer(http.Dir(root)))
	t.Cleanup(s.Close)
	return s.URL
}

// openURL opens the image at url as attach does: read with range requests,
// its backing files resolved next to it.
func openURL(url string) (*Image, error) {
	opts := httpsrc.Options{BlockSize: 64 << 10}
	src, err := httpsrc.Open(url, opts)
	if err != nil {
		return nil, err
	}
	im, err := OpenSource(src, url, httpsrc.Named{Options: opts}, Options{CacheSize: 256 << 10})
	if err != nil {
		src.Close()
		return nil, err
	}
	return im, nil
}

// TestOpenSourceMatchesQemuImg: backing chains (qcow2 on qcow2 on raw)
// whose files are all read by URL read back as qemu-img convert -O raw of
// the chain on disk, and the image is read-only.
func TestOpenSourceMatchesQemuImg(t *testing.T) {
	for _, fx := range fixtures {
		if !strings.HasPrefix(fx.name, "chain") {
			continue
		}
		t.Run(fx.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "images", "v1")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			img, _ := fx.build(t, dir)
			want := toRaw(t, img)
			im, err := openURL(serveDir(t, root) + "/images/v1/" + filepath.Base(img))
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if im.Size() != int64(len(want)) {
				t.Fatalf("Size() = %d, want %d", im.Size(), len(want))
			}
			got := make([]byte, len(want))
			for off := 0; off < len(got); off += 300 << 10 {
				if _, err := im.ReadAt(got[off:min(off+300<<10, len(got))], int64(off)); err != nil {
					t.Fatalf("ReadAt(off=%d): %v", off, err)
				}
			}
			if d := firstDiff(got, want); d >= 0 {
				t.Fatalf("read differs from qemu-img at byte %d", d)
			}
			if !im.Caps().ReadOnly {
				t.Error("Caps().ReadOnly = false for an image by URL")
			}
			if _, err := im.WriteAt(make([]byte, 512), 0); !errors.Is(err, sources.ErrReadOnly) {
				t.Errorf("WriteAt = %v, want ErrReadOnly", err)
			}
		})
	}
}

// TestOpenSourceConfined: a backing name that leaves the image's
// directory on the server, an absolute path and another URL are refused
// at open, in one line;
// a chain that loops is refused too.
func TestOpenSourceConfined(t *testing.T) {
	tests := []struct {
		name    string
		backing string // the top image's backing name
		want    string // in the error
		perm    bool   // errors.Is(err, fs.ErrPermission)
	}{
		{name: "parent directory", backing: "../base.qcow2", want: `"../base.qcow2" (http://`, perm: true},
		{name: "down and out", backing: "sub/../../base.qcow2", want: "outside http://", perm: true},
		{name: "absolute path", backing: "/base.qcow2", want: "an absolute path", perm: true},
		{name: "another host", backing: "http://127.0.0.2/base.qcow2", want: "only plain file names"},
		{name: "loop", backing: "top.qcow2", want: "loops back to"},
	}
	root := t.TempDir()
	dir := filepath.Join(root, "dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A base the escaping names would reach: it must never be opened.
	qemuImg(t, "create", "-q", "-f", "qcow2", filepath.Join(root, "base.qcow2"), "1M")
	url := serveDir(t, root)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := filepath.Join(dir, "top.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-b", tt.backing, "-F", "qcow2", top, "1M")
			im, err := openURL(url + "/dir/top.qcow2")
			if err == nil {
				im.Close()
				t.Fatalf("open with backing %q succeeded", tt.backing)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("error = %q, want one line with %q", msg, tt.want)
			}
			if got := errors.Is(err, fs.ErrPermission); got != tt.perm {
				t.Errorf("errors.Is(err, fs.ErrPermission) = %v, want %v", got, tt.perm)
			}
		})
	}
}
