package remote

import (
	"fmt"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// TestExtentsOwnServer: a remote export served by nbdloop reports the
// holes of the memory source behind the server, as that source does,
// over the whole export and over an unaligned range inside.
func TestExtentsOwnServer(t *testing.T) {
	const size = 16 << 20
	m, err := sources.NewMemory(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	for _, w := range [][2]int64{{1 << 20, 64 << 10}, {5<<20 + 4096, 8192}, {size - 4096, 4096}} {
		if _, err := m.WriteAt(make([]byte, w[1]), w[0]); err != nil {
			t.Fatal(err)
		}
		m.WriteAt([]byte{1}, w[0])
	}
	s := openFast(t, newOwnServer(t, m).uri(), Options{})
	defer s.Close()
	if !s.Info().BaseAllocation {
		t.Fatalf("base:allocation not selected: %+v", s.Info())
	}
	for _, r := range [][2]int64{{0, size}, {4097, 6 << 20}} {
		want := sourcetest.Extents(t, m, r[0], r[1])
		got := sourcetest.Extents(t, s, r[0], r[1])
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Extents(%d, %d) = %v\nthe memory source's: %v", r[0], r[1], got, want)
		}
		if len(want) < 3 {
			t.Errorf("the fixture: the memory source reports %v, want holes and data", want)
		}
	}
}
