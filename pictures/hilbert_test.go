package pictures

import "testing"

// TestHilbertBijective: over several orders, every index maps to a
// distinct cell of the grid and back to itself.
func TestHilbertBijective(t *testing.T) {
	for _, order := range []int{0, 1, 2, 3, 5, 8} {
		n := 1 << order
		seen := make([]bool, n*n)
		for d := uint64(0); d < uint64(n*n); d++ {
			x, y := HilbertXY(order, d)
			if x < 0 || x >= n || y < 0 || y >= n {
				t.Fatalf("order %d: HilbertXY(%d) = (%d, %d), outside the %dx%d grid", order, d, x, y, n, n)
			}
			if seen[y*n+x] {
				t.Fatalf("order %d: HilbertXY(%d) = (%d, %d), a cell already used", order, d, x, y)
			}
			seen[y*n+x] = true
			if got := Hilbert(order, x, y); got != d {
				t.Fatalf("order %d: Hilbert(%d, %d) = %d, want %d", order, x, y, got, d)
			}
		}
	}
}

// TestHilbertNeighbours: consecutive indices are grid neighbours, and the
// curve runs from one bottom corner to the other.
func TestHilbertNeighbours(t *testing.T) {
	for _, order := range []int{1, 2, 4, 7, 10} {
		n := uint64(1) << order
		px, py := HilbertXY(order, 0)
		if px != 0 || py != 0 {
			t.Errorf("order %d: starts at (%d, %d), want (0, 0)", order, px, py)
		}
		for d := uint64(1); d < n*n; d++ {
			x, y := HilbertXY(order, d)
			if abs(x-px)+abs(y-py) != 1 {
				t.Fatalf("order %d: HilbertXY(%d) = (%d, %d) is not next to HilbertXY(%d) = (%d, %d)", order, d, x, y, d-1, px, py)
			}
			px, py = x, y
		}
		if px != int(n-1) || py != 0 {
			t.Errorf("order %d: ends at (%d, %d), want (%d, 0)", order, px, py, n-1)
		}
	}
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
