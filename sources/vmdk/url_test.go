package vmdk

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/httpsrc"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// TestOpenSourceManyExtents: a hostile descriptor by URL whose 4096
// extents all name one 32 KiB file, read whole: every extent is an object
// of its own, and their fetched blocks share the device's Pool (1 MiB),
// so the memory held after the read stays near it rather than growing
// with the extents (128 MiB if each had a cache of its own); the bytes
// are the file's, again and again.
func TestOpenSourceManyExtents(t *testing.T) {
	root := t.TempDir()
	flat := imagetest.Data(32<<10, 31)
	if err := os.WriteFile(filepath.Join(root, "flat.bin"), flat, 0o644); err != nil {
		t.Fatal(err)
	}
	desc := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n" +
		strings.Repeat("RDONLY 64 FLAT \"flat.bin\" 0\n", maxExtents)
	if err := os.WriteFile(filepath.Join(root, "many.vmdk"), []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(root)))
	defer srv.Close()
	url := srv.URL + "/many.vmdk"

	const pool = 1 << 20
	opts := httpsrc.Options{Pool: httpsrc.NewPool(pool), Connections: 4}
	var live uint64
	alloc := imagetest.Allocated(func() {
		before := heapLive()
		src, err := httpsrc.Open(url, opts)
		if err != nil {
			t.Fatal(err)
		}
		d, err := OpenSource(src, url, httpsrc.Named{Options: opts}, Options{CacheSize: 256 << 10, Budget: sources.NewBudget(hostileBudget)})
		if err != nil {
			src.Close()
			t.Fatal(err)
		}
		defer d.Close()
		if d.Size() != maxExtents*int64(len(flat)) {
			t.Fatalf("Size = %d, want %d", d.Size(), maxExtents*len(flat))
		}
		buf := make([]byte, len(flat))
		for i := range int64(maxExtents) {
			if _, err := d.ReadAt(buf, i*int64(len(flat))); err != nil || !bytes.Equal(buf, flat) {
				t.Fatalf("extent %d: %v, or wrong bytes", i, err)
			}
		}
		if st := opts.Pool.Stats(); st.Peak > pool+64<<10 || st.Caches < maxExtents {
			t.Errorf("pool %+v: want %d caches within %d bytes (and a block)", st, maxExtents, pool)
		}
		live = heapLive() - min(before, heapLive())
	})
	if st := opts.Pool.Stats(); st.Used != 0 || st.Caches != 0 {
		t.Errorf("after Close: pool %+v, want empty", st)
	}
	t.Logf("allocated %s, held %s after the read", bytesize.Words(int64(alloc)), bytesize.Words(int64(live)))
	// What each extent costs besides its blocks (its descriptor entry, its
	// object, its cache's tables), and the pool.
	if bound := uint64(pool + maxExtents*4<<10); live > bound {
		t.Errorf("%s held after reading %d extents, want at most %s", bytesize.Words(int64(live)), maxExtents, bytesize.Words(int64(bound)))
	}
}

// heapLive is the memory of live objects after a collection.
func heapLive() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
