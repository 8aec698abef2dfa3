package blockcache

import (
	"bytes"
	"sync"
	"testing"
)

// Caches that share a Pool hold no more than its limit together, however
// many there are and however they are read; each gives its memory back
// when closed.
func TestPool(t *testing.T) {
	data := testData(256 << 10)
	for _, tc := range []struct {
		name     string
		caches   int
		parallel bool
	}{
		{"one after another", 200, false},
		{"in parallel", 64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const limit, chunk = 1 << 20, 64 << 10
			pool := NewPool(limit)
			caches := make([]*Cache, tc.caches)
			for i := range caches {
				f := newFake(data, 128<<10, 128<<10)
				c, err := New(f.segs, f.open, Options{Budget: limit, Chunk: chunk, Readahead: -1, Pool: pool})
				if err != nil {
					t.Fatal(err)
				}
				caches[i] = c
			}
			read := func(c *Cache) {
				buf := make([]byte, 32<<10)
				for off := int64(0); off < int64(len(data)); off += int64(len(buf)) {
					if _, err := c.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
						t.Errorf("ReadAt(%d) = %v, or wrong bytes", off, err)
						return
					}
				}
			}
			var wg sync.WaitGroup
			for _, c := range caches {
				if !tc.parallel {
					read(c)
					continue
				}
				wg.Add(1)
				go func() { defer wg.Done(); read(c) }()
			}
			wg.Wait()
			st := pool.Stats()
			// Beyond the limit: the chunks readers wait for, one each.
			slack := int64(chunk)
			if tc.parallel {
				slack = int64(tc.caches) * (chunk + 4096)
			}
			if st.Peak > limit+slack || st.Used > limit {
				t.Errorf("pool %+v: over its limit of %d", st, limit)
			}
			if st.Caches == 0 || st.Used == 0 {
				t.Errorf("pool %+v: want the caches' chunks counted", st)
			}
			for _, c := range caches {
				c.Close()
			}
			if st := pool.Stats(); st.Used != 0 || st.Caches != 0 {
				t.Errorf("after Close: pool %+v, want empty", st)
			}
		})
	}
}
