package httpsrc

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/nginxtest"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
	"github.com/nbdloop/nbdloop/sources/xz"
)

func TestNginx(t *testing.T) {
	ng := nginxtest.Start(t, t.TempDir())
	data := imagetest.Data(3<<20+4096, 11)
	raw := ng.Put(t, "disk.img", data, time.Unix(1700000000, 0))
	t.Run("Conformance", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sources.Source {
			src, err := Open(raw, testOptions(Options{}))
			if err != nil {
				t.Fatal(err)
			}
			return src
		}, data)
	})
	t.Run("Pinned by ETag", func(t *testing.T) {
		src, err := Open(raw, testOptions(Options{}))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if pin := src.Object().Pin(); !strings.HasPrefix(pin, `etag:"`) {
			t.Errorf("Pin() = %q, want nginx's ETag", pin)
		}
	})
	t.Run("xz", func(t *testing.T) {
		url := ng.Put(t, "disk.img.xz", imagetest.XZ(t, data, "--block-size=256KiB"), time.Unix(1700000000, 0))
		src, err := Open(url, testOptions(Options{CacheSize: 2 << 20}))
		if err != nil {
			t.Fatal(err)
		}
		img, err := xz.Open(src, src.Size(), xz.Options{CacheSize: 4 << 20})
		if err != nil {
			src.Close()
			t.Fatal(err)
		}
		defer img.Close()
		imagetest.CheckReads(t, img, data)
		src.Close()
	})
	t.Run("Replaced", func(t *testing.T) {
		url := ng.Put(t, "replaced.img", data, time.Unix(1700000000, 0))
		var log logLines
		src, err := Open(url, testOptions(Options{Logf: log.logf}))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		buf := make([]byte, 4096)
		if _, err := src.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:4096]) {
			t.Fatalf("first read = %v, or wrong bytes", err)
		}
		// The same size, another modification time: another ETag.
		ng.Put(t, "replaced.img", imagetest.Data(len(data), 12), time.Unix(1700000100, 0))
		if _, err := src.ReadAt(buf, 2<<20); !errors.Is(err, ErrReplaced) || !errors.Is(err, syscall.EIO) {
			t.Errorf("read of the replaced object = %v, want ErrReplaced (EIO)", err)
		}
		if lines := log.get(); len(lines) != 1 || !strings.Contains(lines[0], "412") {
			t.Errorf("log = %q, want one line with nginx's 412", lines)
		}
	})
}
