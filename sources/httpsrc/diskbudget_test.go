package httpsrc

import (
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// TestDiskBudget: the objects of one device share its room in CacheDir,
// each taking at most what its blocks need, in the order they are
// opened; an object opened when no block of room is left is cached in
// memory only, with a warning; a closed object's room goes to the next.
func TestDiskBudget(t *testing.T) {
	const bs = 64 << 10
	// Each object on a server of its own: one file each in dir.
	big := func() *server { return newServer(t, imagetest.Data(10*bs, 31), nil) }    // 10 blocks
	small := func() *server { return newServer(t, imagetest.Data(bs+100, 32), nil) } // 2 blocks
	dir := cacheDir(t)
	budget := NewDiskBudget(13 * bs)
	opts := Options{CacheDir: dir, CacheSize: 8 * bs, DiskBudget: budget}

	steps := []struct {
		name      string
		s         *server
		wantTaken int64 // 0: not cached on disk
	}{
		{"the first object takes DiskCacheSize (CacheSize): 8 of its 10 blocks", big(), 8 * bs},
		{"a small one only its 2 blocks", small(), 2 * bs},
		{"the next one what is left: 3 blocks", big(), 3 * bs},
		{"then nothing is left", small(), 0},
	}
	var opened []*Source
	for _, st := range steps {
		src := st.s.open(t, opts)
		opened = append(opened, src)
		if got := src.obj.diskTaken; got != st.wantTaken {
			t.Errorf("%s: took %d bytes, want %d", st.name, got, st.wantTaken)
		}
		warned := strings.Contains(strings.Join(src.Warnings(), "\n"), "not cached in "+dir)
		if warned != (st.wantTaken == 0) {
			t.Errorf("%s: warnings %q", st.name, src.Warnings())
		}
		if st.wantTaken > 0 && src.obj.store == nil {
			t.Errorf("%s: no file in CacheDir", st.name)
		}
	}
	opened[1].Close() // gives its 2 blocks back
	again := small().open(t, opts)
	if got := again.obj.diskTaken; got != 2*bs {
		t.Errorf("after a Close: took %d bytes, want %d", got, 2*bs)
	}
	opened = append(opened, again)
	for i, src := range opened {
		if i != 1 {
			src.Close()
		}
	}
	if budget.left != 13*bs {
		t.Errorf("after every Close: %d bytes left, want %d", budget.left, 13*bs)
	}
}
