package pictures

import (
	"fmt"
	"image"
	"math"
	"math/bits"

	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// Geometry of a picture, in pixels.
const (
	margin      = 10
	titleH      = 16  // the title line above the map
	legendW     = 216 // the legend to the right of the map
	legendMinH  = 264
	stripGap    = 8
	stripH      = 24 // the time strip under the map
	keyCells    = 8  // the offset key is a Hilbert curve of keyCells x keyCells
	keyCellSize = 12
)

// Layout places the device on a picture: the map is a Side x Side square
// of pixels, one per CellBytes bytes of the device, laid out along a
// Hilbert curve of the given order (pixel i of the curve holds the bytes
// i*CellBytes up to (i+1)*CellBytes). Pixels past DeviceSize are drawn
// grey.
type Layout struct {
	Order      int
	Side       int    // 1 << Order
	CellBytes  uint64 // a power of two
	DeviceSize uint64
	Map        image.Rectangle // the square, within Bounds
	Legend     image.Rectangle
	Strip      image.Rectangle // the time strip, one column per Side'th of the run
	Bounds     image.Rectangle // the whole picture
}

// NewLayout lays out a device of size bytes on a side x side map. side
// must be a power of two from 16 to 4096.
func NewLayout(size uint64, side int) (Layout, error) {
	if side < 16 || side > 4096 || side&(side-1) != 0 {
		return Layout{}, fmt.Errorf("image size %d is not a power of two from 16 to 4096", side)
	}
	if size == 0 {
		return Layout{}, fmt.Errorf("device size is 0")
	}
	order := bits.TrailingZeros(uint(side))
	cells := uint64(side) * uint64(side)
	per := (size-1)/cells + 1
	cell := uint64(1)
	if per > 1 {
		cell = 1 << bits.Len64(per-1)
	}
	l := Layout{Order: order, Side: side, CellBytes: cell, DeviceSize: size}
	panelH := max(side, legendMinH)
	l.Map = image.Rect(margin, margin+titleH, margin+side, margin+titleH+side)
	l.Legend = image.Rect(l.Map.Max.X+2*margin, l.Map.Min.Y, l.Map.Max.X+2*margin+legendW, l.Map.Min.Y+panelH)
	l.Strip = image.Rect(margin, l.Map.Min.Y+panelH+stripGap, margin+side, l.Map.Min.Y+panelH+stripGap+stripH)
	l.Bounds = image.Rect(0, 0, l.Legend.Max.X+margin, l.Strip.Max.Y+4+glyphH+margin)
	return l, nil
}

// Cells is the number of pixels on the map.
func (l *Layout) Cells() uint64 { return uint64(l.Side) * uint64(l.Side) }

// Cell returns the index along the curve of the pixel that holds byte off,
// and false when off is past the end of the device.
func (l *Layout) Cell(off uint64) (uint64, bool) {
	if off >= l.DeviceSize {
		return 0, false
	}
	return off / l.CellBytes, true
}

// Pixel returns the position on the picture of the pixel that holds byte
// off, and false when off is past the end of the device.
func (l *Layout) Pixel(off uint64) (image.Point, bool) {
	d, ok := l.Cell(off)
	if !ok {
		return image.Point{}, false
	}
	x, y := HilbertXY(l.Order, d)
	return l.Map.Min.Add(image.Pt(x, y)), true
}

// Offset returns the first byte that the map pixel at p holds, and false
// when p is not on the map or past the end of the device.
func (l *Layout) Offset(p image.Point) (uint64, bool) {
	if !p.In(l.Map) {
		return 0, false
	}
	p = p.Sub(l.Map.Min)
	d := Hilbert(l.Order, p.X, p.Y)
	if d >= (l.DeviceSize-1)/l.CellBytes+1 {
		return 0, false
	}
	return d * l.CellBytes, true
}

// formatBytes writes n as `list` and `top` do (bytesize.Format: 512B, 4K,
// 1.5G), n above 2^63-1 as 2^63-1.
func formatBytes(n uint64) string {
	return bytesize.Format(int64(min(n, math.MaxInt64)))
}
