package httpsrc

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

func cacheDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// readAll reads the whole Source in 100 KiB pieces and compares.
func readAll(t *testing.T, src *Source, want []byte) {
	t.Helper()
	buf := make([]byte, 100<<10)
	for off := int64(0); off < int64(len(want)); off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), int64(len(want))-off)]
		if _, err := src.ReadAt(p, off); err != nil {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
		if !bytes.Equal(p, want[off:off+int64(len(p))]) {
			t.Fatalf("ReadAt(%d): wrong bytes", off)
		}
	}
}

// TestCacheDir: blocks fetched once are read back from the directory by
// the next Source of the same object, and by one whose server does not
// answer; a corrupted block is fetched again; a replaced object never
// reads the old blocks.
func TestCacheDir(t *testing.T) {
	data := imagetest.Data(2<<20+12345, 21)
	var down atomic.Bool
	s := newServer(t, data, func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	dir := cacheDir(t)
	opts := Options{CacheDir: dir, CacheSize: 4 << 20}
	nblocks := int64(len(data)+64<<10-1) / (64 << 10)

	src := s.open(t, opts)
	readAll(t, src, data)
	if st := src.DiskStats(); st.Stored != nblocks || st.Hits != 0 {
		t.Errorf("first read: %+v, want %d blocks stored, no hits", st, nblocks)
	}
	src.Close()

	t.Run("again", func(t *testing.T) {
		before := s.ranges.Load()
		src := s.open(t, opts)
		defer src.Close()
		readAll(t, src, data)
		if st := src.DiskStats(); st.Hits != nblocks {
			t.Errorf("DiskStats = %+v, want %d hits", st, nblocks)
		}
		if n := s.ranges.Load() - before; n > 1 {
			t.Errorf("%d range requests, want none but Stat's", n)
		}
	})
	t.Run("server down", func(t *testing.T) {
		down.Store(true)
		defer down.Store(false)
		src := s.open(t, Options{CacheDir: dir, CacheSize: 4 << 20, Deadline: 500 * time.Millisecond})
		defer src.Close()
		if w := strings.Join(src.Warnings(), "\n"); !strings.Contains(w, "did not answer") {
			t.Errorf("warnings %q do not say the server did not answer", w)
		}
		readAll(t, src, data)
	})
	t.Run("server down, nothing cached", func(t *testing.T) {
		down.Store(true)
		defer down.Store(false)
		if src, err := Open(s.URL+"/disk.img", testOptions(Options{CacheDir: cacheDir(t), Deadline: 300 * time.Millisecond})); err == nil {
			src.Close()
			t.Error("Open succeeded with the server down and nothing cached")
		}
	})
	t.Run("corrupted", func(t *testing.T) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.blocks"))
		if len(files) != 1 {
			t.Fatalf("files in the cache directory: %v", files)
		}
		f, err := os.OpenFile(files[0], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		f.WriteAt([]byte("garbage"), fi.Size()-1000) // the last slot written
		f.Close()
		var log logLines
		before := s.ranges.Load()
		src := s.open(t, Options{CacheDir: dir, CacheSize: 4 << 20, Logf: log.logf})
		defer src.Close()
		readAll(t, src, data)
		if st := src.DiskStats(); st.Corrupt != 1 || st.Hits != nblocks-1 || st.Stored != 1 {
			t.Errorf("DiskStats = %+v, want 1 corrupt, %d hits, 1 stored", st, nblocks-1)
		}
		if n := s.ranges.Load() - before; n != 1 {
			t.Errorf("%d range requests, want 1 (the corrupted block)", n)
		}
		if l := strings.Join(log.get(), "\n"); !strings.Contains(l, "failed its check") {
			t.Errorf("log %q does not name the corrupted block", l)
		}
	})
	t.Run("replaced", func(t *testing.T) {
		other := imagetest.Data(len(data), 22)
		s.set(other, `"v2"`)
		defer s.set(data, `"v1"`)
		src := s.open(t, opts)
		defer src.Close()
		readAll(t, src, other)
		if st := src.DiskStats(); st.Hits != 0 {
			t.Errorf("%d blocks of the old object read back", st.Hits)
		}
	})
	t.Run("no validator", func(t *testing.T) {
		s.set(data, "")
		defer s.set(data, `"v1"`)
		s.obj.Load().mod = time.Time{}
		src := s.open(t, opts)
		defer src.Close()
		if w := strings.Join(src.Warnings(), "\n"); !strings.Contains(w, "not cached in") {
			t.Errorf("warnings %q do not say the object is not cached on disk", w)
		}
	})
	t.Run("directory writable by others", func(t *testing.T) {
		bad := cacheDir(t)
		os.Chmod(bad, 0o777)
		if src, err := Open(s.URL+"/disk.img", testOptions(Options{CacheDir: bad})); err == nil {
			src.Close()
			t.Error("Open succeeded")
		} else if !strings.Contains(err.Error(), "writable by its group or by others") {
			t.Errorf("error %q", err)
		}
	})
}
