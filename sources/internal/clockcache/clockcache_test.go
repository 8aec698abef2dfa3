package clockcache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// op is one call in a test script. Insert stores the key, as a string, in
// the value it gets back, after checking that the value it found there was
// prev.
type op struct {
	do   string // "get", "peek", "insert", "remove", "dirty", "clean"
	key  int
	want bool   // get, peek, dirty, clean: the result
	prev string // insert: the value found in the slot
}

func get(k int, hit bool) op         { return op{do: "get", key: k, want: hit} }
func peek(k int, hit bool) op        { return op{do: "peek", key: k, want: hit} }
func insert(k int, prev string) op   { return op{do: "insert", key: k, prev: prev} }
func remove(k int) op                { return op{do: "remove", key: k} }
func setDirty(k int, cached bool) op { return op{do: "dirty", key: k, want: cached} }
func setClean(k int, cached bool) op { return op{do: "clean", key: k, want: cached} }

func TestCache(t *testing.T) {
	tests := []struct {
		name      string
		limit     int
		grows     int // calls to grow that agree, then it refuses; -1: grow is nil
		ops       []op
		wantKeys  []int // cached keys, sorted
		wantDirty []string
		wantGrow  int // calls to grow
	}{
		{
			name: "hit after insert", limit: 2, grows: -1,
			ops:      []op{insert(1, ""), get(1, true), peek(1, true), get(2, false)},
			wantKeys: []int{1},
		},
		{
			name: "evicts in clock order", limit: 3, grows: -1,
			ops:      []op{insert(1, ""), insert(2, ""), insert(3, ""), insert(4, "1")},
			wantKeys: []int{2, 3, 4},
		},
		{
			name: "a referenced entry gets a second chance", limit: 3, grows: -1,
			// Inserting 4 clears every bit and evicts 1; the hand then
			// stands at 2, which get marks again, so 3 goes next.
			ops:      []op{insert(1, ""), insert(2, ""), insert(3, ""), insert(4, "1"), get(2, true), insert(5, "3")},
			wantKeys: []int{2, 4, 5},
		},
		{
			name: "peek leaves the reference bit", limit: 2, grows: -1,
			// After 3 evicts 1, get(2) would save 2; peek does not.
			ops:      []op{insert(1, ""), insert(2, ""), insert(3, "1"), peek(2, true), insert(4, "2")},
			wantKeys: []int{3, 4},
		},
		{
			name: "dirty entries are never evicted", limit: 2, grows: -1,
			ops:       []op{insert(1, ""), setDirty(1, true), insert(2, ""), insert(3, "2"), insert(4, "3")},
			wantKeys:  []int{1, 4},
			wantDirty: []string{"1"},
		},
		{
			name: "every entry dirty: past the limit", limit: 2, grows: -1,
			ops:       []op{insert(1, ""), setDirty(1, true), insert(2, ""), setDirty(2, true), insert(3, "")},
			wantKeys:  []int{1, 2, 3},
			wantDirty: []string{"1", "2"},
		},
		{
			name: "back to the limit once clean", limit: 2, grows: -1,
			// 3 went past the limit; inserting 5 evicts down to the limit
			// (1, its value let go), then 2 for 5, which finds 2's value.
			ops: []op{
				insert(1, ""), setDirty(1, true), insert(2, ""), setDirty(2, true), insert(3, ""),
				setClean(1, true), setClean(2, true), insert(5, "2"),
			},
			wantKeys: []int{3, 5},
		},
		{
			name: "the first slot is free, the others need grow", limit: 3, grows: 0,
			ops:      []op{insert(1, ""), insert(2, "1"), insert(3, "2")},
			wantKeys: []int{3},
			wantGrow: 1,
		},
		{
			name: "grow refused: keeps the slots it has", limit: 4, grows: 1,
			ops:      []op{insert(1, ""), insert(2, ""), insert(3, "1"), insert(4, "2"), insert(5, "3")},
			wantKeys: []int{4, 5},
			wantGrow: 2,
		},
		{
			name: "grow asked once per slot", limit: 3, grows: 10,
			ops:      []op{insert(1, ""), insert(2, ""), insert(3, ""), insert(4, "1"), insert(5, "2")},
			wantKeys: []int{3, 4, 5},
			wantGrow: 2,
		},
		{
			name: "a limit below 1 is 1", limit: 0, grows: -1,
			ops:      []op{insert(1, ""), insert(2, "1")},
			wantKeys: []int{2},
		},
		{
			name: "insert of a cached key keeps its value, clean", limit: 2, grows: -1,
			ops:      []op{insert(1, ""), setDirty(1, true), insert(1, "1")},
			wantKeys: []int{1},
		},
		{
			name: "remove frees the slot, value kept", limit: 2, grows: -1,
			ops:      []op{insert(1, ""), insert(2, ""), remove(1), get(1, false), insert(3, "1")},
			wantKeys: []int{2, 3},
		},
		{
			name: "remove of a dirty entry", limit: 2, grows: -1,
			ops:      []op{insert(1, ""), setDirty(1, true), remove(1), remove(7)},
			wantKeys: []int{},
		},
		{
			name: "dirty and clean of an uncached key", limit: 2, grows: -1,
			ops:      []op{setDirty(1, false), setClean(1, false)},
			wantKeys: []int{},
		},
		{
			name: "dirty values in slot order", limit: 4, grows: -1,
			ops: []op{
				insert(1, ""), insert(2, ""), insert(3, ""), setDirty(3, true), setDirty(1, true),
				setDirty(1, true), setDirty(2, true), setClean(2, true),
			},
			wantKeys:  []int{1, 2, 3},
			wantDirty: []string{"1", "3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls int
			var grow func() bool
			if tt.grows >= 0 {
				grow = func() bool { calls++; return calls <= tt.grows }
			}
			c := New[int, string](tt.limit, grow)
			for n, o := range tt.ops {
				_, cached := c.Peek(o.key)
				run(t, c, n, o)
				checkInvariants(t, c, o.do == "insert" && !cached)
			}
			if got := keys(c); !slices.Equal(got, tt.wantKeys) {
				t.Errorf("keys = %v, want %v", got, tt.wantKeys)
			}
			if got := c.AppendDirty(nil); !slices.Equal(got, tt.wantDirty) {
				t.Errorf("AppendDirty = %q, want %q", got, tt.wantDirty)
			}
			if calls != tt.wantGrow {
				t.Errorf("grow calls = %d, want %d", calls, tt.wantGrow)
			}
		})
	}
}

func run(t *testing.T, c *Cache[int, string], n int, o op) {
	t.Helper()
	switch o.do {
	case "get", "peek":
		f := c.Get
		if o.do == "peek" {
			f = c.Peek
		}
		v, ok := f(o.key)
		if ok != o.want {
			t.Fatalf("op %d: %s(%d) ok = %v, want %v", n, o.do, o.key, ok, o.want)
		}
		if ok && *v != strconv.Itoa(o.key) {
			t.Fatalf("op %d: %s(%d) = %q, want %q", n, o.do, o.key, *v, strconv.Itoa(o.key))
		}
	case "insert":
		v := c.Insert(o.key)
		if *v != o.prev {
			t.Fatalf("op %d: Insert(%d) found %q, want %q", n, o.key, *v, o.prev)
		}
		*v = strconv.Itoa(o.key)
	case "remove":
		c.Remove(o.key)
	case "dirty", "clean":
		if got := c.SetDirty(o.key, o.do == "dirty"); got != o.want {
			t.Fatalf("op %d: SetDirty(%d, %v) = %v, want %v", n, o.key, o.do == "dirty", got, o.want)
		}
	default:
		t.Fatalf("op %d: unknown %q", n, o.do)
	}
}

func keys(c *Cache[int, string]) []int {
	ks := []int{}
	for k := range c.index {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// checkInvariants checks the cache's bookkeeping: the index, the free
// list, the counts, and, after an Insert of a new key, the limit, which
// only dirty entries may push it past (cleaning them lets the next such
// Insert shrink it).
func checkInvariants(t *testing.T, c *Cache[int, string], inserted bool) {
	t.Helper()
	live, dirty := 0, 0
	for i, s := range c.slots {
		if !s.live {
			if s.dirty || s.ref {
				t.Fatalf("empty slot %d is dirty or referenced", i)
			}
			continue
		}
		live++
		if s.dirty {
			dirty++
		}
		if j, ok := c.index[s.key]; !ok || int(j) != i {
			t.Fatalf("slot %d holds key %d, indexed at %d, %v", i, s.key, j, ok)
		}
	}
	if live != len(c.index) || live != c.Len() {
		t.Fatalf("%d live slots, %d indexed, Len %d", live, len(c.index), c.Len())
	}
	if dirty != c.Dirty() {
		t.Fatalf("%d dirty slots, Dirty %d", dirty, c.Dirty())
	}
	if live+len(c.free) != len(c.slots) {
		t.Fatalf("%d live + %d free != %d slots", live, len(c.free), len(c.slots))
	}
	for _, i := range c.free {
		if c.slots[i].live {
			t.Fatalf("free slot %d is live", i)
		}
	}
	if inserted && live > c.limit && live > dirty+1 {
		t.Fatalf("%d entries over the limit %d with only %d dirty", live, c.limit, dirty)
	}
}

// TestCacheRandom runs random calls against a map that models what must be
// cached: dirty entries are never lost, and every cached value is its key.
func TestCacheRandom(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			limit := 1 + r.IntN(8)
			grows := r.IntN(10)
			c := New[int, string](limit, func() bool { grows--; return grows >= 0 })
			dirty := map[int]bool{}
			for n := range 2000 {
				k := r.IntN(16)
				fresh := false
				switch r.IntN(6) {
				case 0, 1:
					if v, ok := c.Get(k); ok && *v != strconv.Itoa(k) {
						t.Fatalf("op %d: Get(%d) = %q", n, k, *v)
					}
				case 2:
					_, cached := c.Peek(k)
					fresh = !cached
					*c.Insert(k) = strconv.Itoa(k)
					delete(dirty, k)
				case 3:
					if c.SetDirty(k, true) {
						dirty[k] = true
					}
				case 4:
					if len(dirty) > limit/2 || r.IntN(4) == 0 {
						for d := range dirty {
							c.SetDirty(d, false)
						}
						clear(dirty)
					}
				case 5:
					if r.IntN(8) == 0 {
						c.Remove(k)
						delete(dirty, k)
					}
				}
				checkInvariants(t, c, fresh)
				for d := range dirty {
					if _, ok := c.Peek(d); !ok {
						t.Fatalf("op %d: dirty entry %d was evicted", n, d)
					}
				}
			}
		})
	}
}

// TestCacheShrinkLetsValuesGo checks that the entries evicted to come back
// to the limit leave no value behind in their slots.
func TestCacheShrinkLetsValuesGo(t *testing.T) {
	c := New[int, string](1, nil)
	for k := range 3 {
		*c.Insert(k) = strconv.Itoa(k)
		c.SetDirty(k, true)
	}
	for k := range 3 {
		c.SetDirty(k, false)
	}
	*c.Insert(3) = "3"
	if c.Len() != 1 || len(c.free) != 2 {
		t.Fatalf("Len = %d, %d free slots, want 1 and 2", c.Len(), len(c.free))
	}
	for _, i := range c.free {
		if v := c.slots[i].val; v != "" {
			t.Errorf("free slot %d holds %q", i, v)
		}
	}
}

// TestCacheAllocs checks that hits, and misses once the slots exist, do not
// allocate.
func TestCacheAllocs(t *testing.T) {
	c := New[uint32, []byte](64, nil)
	for k := range uint32(256) {
		if v := c.Insert(k); *v == nil {
			*v = make([]byte, 16)
		}
	}
	hit := testing.AllocsPerRun(1000, func() {
		if _, ok := c.Get(255); !ok {
			t.Fatal("miss")
		}
	})
	k := uint32(1000)
	miss := testing.AllocsPerRun(1000, func() {
		if _, ok := c.Get(k); !ok {
			if v := c.Insert(k); *v == nil {
				*v = make([]byte, 16)
			}
		}
		k++
	})
	if hit != 0 || miss != 0 {
		t.Errorf("allocations: %v per hit, %v per miss, want 0", hit, miss)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	c := New[int64, []byte](512, nil)
	for k := range int64(512) {
		*c.Insert(k << 16) = make([]byte, 8)
	}
	var k int64
	for b.Loop() {
		c.Get((k & 511) << 16)
		k++
	}
}

func BenchmarkCacheMiss(b *testing.B) {
	c := New[int64, []byte](512, nil)
	var k int64
	for b.Loop() {
		if _, ok := c.Get(k); !ok {
			if v := c.Insert(k); *v == nil {
				*v = make([]byte, 8)
			}
		}
		k++
	}
}
