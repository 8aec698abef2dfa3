package pictures

// HilbertXY returns the position on a 2^order x 2^order grid of index d
// along the Hilbert curve that starts at (0, 0) and ends at (2^order-1, 0).
// Consecutive indices are neighbours on the grid (they differ by one in x
// or y), which is why offsets that are close on the device stay close on
// the picture. d must be below 4^order; order is at most 31.
func HilbertXY(order int, d uint64) (x, y int) {
	for s := 1; s < 1<<order; s <<= 1 {
		rx := int(d>>1) & 1
		ry := int(d^uint64(rx)) & 1
		x, y = hilbertRotate(s, x, y, rx, ry)
		x += s * rx
		y += s * ry
		d >>= 2
	}
	return x, y
}

// Hilbert is the inverse of HilbertXY: the index along the curve of the
// cell at (x, y), both in 0..2^order-1.
func Hilbert(order int, x, y int) uint64 {
	var d uint64
	n := 1 << order
	for s := n >> 1; s > 0; s >>= 1 {
		rx, ry := 0, 0
		if x&s != 0 {
			rx = 1
		}
		if y&s != 0 {
			ry = 1
		}
		d += uint64(s) * uint64(s) * uint64((3*rx)^ry)
		x, y = hilbertRotate(n, x, y, rx, ry)
	}
	return d
}

// hilbertRotate turns a quadrant of side s so that the sub-curve in it
// starts and ends where the curve of the next level expects.
func hilbertRotate(s, x, y, rx, ry int) (int, int) {
	if ry == 0 {
		if rx == 1 {
			x = s - 1 - x
			y = s - 1 - y
		}
		x, y = y, x
	}
	return x, y
}
