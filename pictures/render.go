package pictures

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"time"
)

// heat counts, per map pixel, the requests that touched the pixel's bytes
// (saturating) and remembers the class of the last one.
type heat struct {
	total []uint32
	last  []Class
}

func newHeat(cells uint64) *heat {
	return &heat{total: make([]uint32, cells), last: make([]Class, cells)}
}

func (h *heat) reset() {
	clear(h.total)
	clear(h.last)
}

// addRange counts one request of class c over cells first..last.
func (h *heat) addRange(c Class, first, last uint64) {
	for d := first; d <= last; d++ {
		if h.total[d] != math.MaxUint32 {
			h.total[d]++
		}
		h.last[d] = c
	}
}

// merge adds o, which comes later, into h.
func (h *heat) merge(o *heat) {
	for d, n := range o.total {
		if n != 0 {
			h.total[d] = uint32(min(uint64(h.total[d])+uint64(n), math.MaxUint32))
			h.last[d] = o.last[d]
		}
	}
}

// at returns the class of the last request that touched cell d and how
// many did; ClassNone and 0 for an untouched cell.
func (h *heat) at(d int) (Class, uint64) {
	return h.last[d], uint64(h.total[d])
}

// level maps a count to a brightness level 1..levels on a log scale whose
// top is most.
func level(n, most uint64) int {
	if most <= 1 || n >= most {
		return levels
	}
	return 1 + int(float64(levels-1)*math.Log(float64(n))/math.Log(float64(most)))
}

// tally counts requests by class (index: Class), plus errors.
type tally struct {
	n      [ClassFlush + 1]uint64
	errors uint64
}

func (t *tally) count(rec *Record) {
	if c := rec.Class(); c != ClassNone {
		t.n[c]++
		if rec.Error != "" {
			t.errors++
		}
	}
}

// strip is the time strip: per column (a Side'th of the run), requests by
// class and flushes.
type strip struct {
	cols [][ClassFlush + 1]uint32
}

// renderer draws pictures of one log on one layout.
type renderer struct {
	l       Layout
	opts    Options
	sum     Summary
	font    font
	pal     color.Palette
	base    *image.Paletted // the parts that never change: legend key, frame
	cellPix []int32         // Pix offset of each map cell
	strip   strip
}

func newRenderer(l Layout, opts Options, sum Summary) *renderer {
	r := &renderer{l: l, opts: opts, sum: sum, font: newFont(), pal: newPalette()}
	r.strip.cols = make([][ClassFlush + 1]uint32, l.Strip.Dx())
	r.cellPix = make([]int32, l.Cells())
	r.base = image.NewPaletted(l.Bounds, r.pal)
	for i := range r.cellPix {
		x, y := HilbertXY(l.Order, uint64(i))
		r.cellPix[i] = int32(r.base.PixOffset(l.Map.Min.X+x, l.Map.Min.Y+y))
	}
	r.drawBase()
	return r
}

// add counts rec on h, on t (if not nil) and on the time strip.
func (r *renderer) add(rec *Record, h *heat, t *tally) {
	c := rec.Class()
	if c == ClassNone {
		return
	}
	if t != nil {
		t.count(rec)
	}
	if col, ok := r.column(rec.Time); ok {
		if v := &r.strip.cols[col][c]; *v != math.MaxUint32 {
			*v++
		}
	}
	if c == ClassFlush {
		return
	}
	first, ok := r.l.Cell(rec.Offset)
	if !ok {
		return
	}
	last := first
	if rec.Length > 0 {
		end := rec.Offset + rec.Length - 1
		if end < rec.Offset || end >= r.l.DeviceSize {
			end = r.l.DeviceSize - 1
		}
		last, _ = r.l.Cell(end)
	}
	h.addRange(c, first, last)
}

// column is the strip column of time t.
func (r *renderer) column(t time.Time) (int, bool) {
	w := r.l.Strip.Dx()
	span := r.sum.Last.Sub(r.sum.First)
	if span <= 0 {
		return 0, true
	}
	col := int(float64(t.Sub(r.sum.First)) / float64(span) * float64(w))
	return min(max(col, 0), w-1), true
}

func (r *renderer) fill(img *image.Paletted, rect image.Rectangle, c uint8) {
	rect = rect.Intersect(img.Rect)
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		o := img.PixOffset(rect.Min.X, y)
		row := img.Pix[o : o+rect.Dx()]
		for i := range row {
			row[i] = c
		}
	}
}

// drawBase draws what every picture of the run shares.
func (r *renderer) drawBase() {
	img, l, f := r.base, &r.l, r.font
	r.fill(img, l.Bounds, idxPanel)
	title := r.opts.Title
	if title == "" {
		title = "nbdloop draw"
	}
	f.draw(img, margin, margin, title, idxText)
	// Map: untouched cells, and grey past the end of the device.
	for d, o := range r.cellPix {
		if uint64(d)*l.CellBytes < l.DeviceSize {
			img.Pix[o] = idxBg
		} else {
			img.Pix[o] = idxOutside
		}
	}
	x, y := l.Legend.Min.X, l.Legend.Min.Y
	// Class swatches: their brightness levels, dim to bright.
	for i, c := range []Class{ClassRead, ClassWrite, ClassTrim} {
		for lv := 1; lv <= levels; lv++ {
			r.fill(img, image.Rect(x+2*(lv-1), y+i*lineStep, x+2*lv, y+i*lineStep+glyphH), classIndex(c, lv))
		}
	}
	for i := range 4 {
		r.fill(img, image.Rect(x+14+4*i, y+3*lineStep, x+16+4*i, y+3*lineStep+glyphH), idxFlush)
	}
	// The offset key: an order-3 Hilbert curve, each cell shaded by where
	// its bytes lie on the device, the same curve as the map's at a
	// coarser scale, and the shade scale under it.
	ky := y + 10*lineStep + 2
	korder := 3
	for d := range keyCells * keyCells {
		cx, cy := HilbertXY(korder, uint64(d))
		r.fill(img, image.Rect(x+cx*keyCellSize, ky+cy*keyCellSize, x+(cx+1)*keyCellSize, ky+(cy+1)*keyCellSize),
			uint8(idxRamp+d*rampSteps/(keyCells*keyCells)))
	}
	for d := 1; d < keyCells*keyCells; d++ {
		ax, ay := HilbertXY(korder, uint64(d-1))
		bx, by := HilbertXY(korder, uint64(d))
		h := keyCellSize / 2
		r.fill(img, image.Rect(x+min(ax, bx)*keyCellSize+h, ky+min(ay, by)*keyCellSize+h,
			x+max(ax, bx)*keyCellSize+h+1, ky+max(ay, by)*keyCellSize+h+1), idxText)
	}
	kw := keyCells * keyCellSize
	by := ky + kw + 4
	for i := range rampSteps {
		r.fill(img, image.Rect(x+i*kw/rampSteps, by, x+(i+1)*kw/rampSteps, by+6), uint8(idxRamp+i))
	}
	f.draw(img, x, by+9, "0", idxDim)
	end := formatBytes(l.DeviceSize)
	f.draw(img, x+kw-textWidth(end), by+9, end, idxDim)
	tx := x + kw + 8
	f.draw(img, tx, ky, "offsets", idxDim)
	f.draw(img, tx, ky+lineStep, "follow a", idxDim)
	f.draw(img, tx, ky+2*lineStep, "hilbert", idxDim)
	f.draw(img, tx, ky+3*lineStep, "curve from", idxDim)
	f.draw(img, tx, ky+4*lineStep, "top left", idxDim)
	f.draw(img, tx, ky+5*lineStep, "to top", idxDim)
	f.draw(img, tx, ky+6*lineStep, "right", idxDim)
	f.draw(img, x, by+9+lineStep, "1 pixel = "+formatBytes(l.CellBytes), idxText)
	f.draw(img, x, by+9+2*lineStep, "device  = "+formatBytes(l.DeviceSize), idxText)
	// The strip's frame and the run's time span.
	r.fill(img, l.Strip, idxBg)
	f.draw(img, l.Strip.Min.X, l.Strip.Max.Y+4, "0 s", idxDim)
	span := fmt.Sprintf("%.3f s", r.sum.Last.Sub(r.sum.First).Seconds())
	f.draw(img, l.Strip.Max.X-textWidth(span), l.Strip.Max.Y+4, span, idxDim)
	// The strip's caption, if it fits between the two times.
	mid := "time, flushes on top"
	if textWidth("0 s")+textWidth(mid)+textWidth(span)+4*advance <= l.Strip.Dx() {
		f.draw(img, l.Strip.Min.X+(l.Strip.Dx()-textWidth(mid))/2, l.Strip.Max.Y+4, mid, idxDim)
	}
}

// picture draws the map of h over the base. With hist, cells that h does
// not touch but hist does are drawn in their class's dim shade (earlier
// frames). t is what the legend counts; label says what the picture shows;
// cursor is the span of the strip to mark, if any.
func (r *renderer) picture(h, hist *heat, t *tally, label string, cursor [2]int) *image.Paletted {
	img := image.NewPaletted(r.l.Bounds, r.pal)
	copy(img.Pix, r.base.Pix)
	var most uint64
	for d := range r.cellPix {
		if _, n := h.at(d); n > most {
			most = n
		}
	}
	for d, o := range r.cellPix {
		if c, n := h.at(d); n > 0 {
			img.Pix[o] = classIndex(c, level(n, most))
		} else if hist != nil {
			if c, n := hist.at(d); n > 0 {
				img.Pix[o] = classIndex(c, 0)
			}
		}
	}
	r.drawStrip(img, cursor)
	x, y, f := r.l.Legend.Min.X, r.l.Legend.Min.Y, r.font
	tx := x + 2*levels + 6
	f.draw(img, tx, y, fmt.Sprintf("read      %d", t.n[ClassRead]), idxText)
	f.draw(img, tx, y+lineStep, fmt.Sprintf("write     %d", t.n[ClassWrite]), idxText)
	f.draw(img, tx, y+2*lineStep, fmt.Sprintf("trim/zero %d", t.n[ClassTrim]), idxText)
	f.draw(img, tx, y+3*lineStep, fmt.Sprintf("flush     %d", t.n[ClassFlush]), idxText)
	if t.errors > 0 {
		f.draw(img, tx, y+4*lineStep, fmt.Sprintf("errors    %d", t.errors), idxFlush)
	}
	f.draw(img, x, y+5*lineStep, "colour: the last request", idxDim)
	f.draw(img, x, y+6*lineStep, "brightness: requests per", idxDim)
	f.draw(img, x, y+7*lineStep, fmt.Sprintf("pixel, log scale, max %d", most), idxDim)
	if hist != nil {
		for i, c := range []Class{ClassRead, ClassWrite, ClassTrim} {
			r.fill(img, image.Rect(x+6*i, y+8*lineStep, x+6*i+5, y+8*lineStep+glyphH), classIndex(c, 0))
		}
		f.draw(img, x+20, y+8*lineStep, "earlier frames", idxDim)
	}
	f.draw(img, x, y+9*lineStep, label, idxText)
	return img
}

// drawStrip draws the time strip: per column, a bar as high as the log of
// its requests in the colour of the class that had most, and a flush tick
// on top.
func (r *renderer) drawStrip(img *image.Paletted, cursor [2]int) {
	s := r.l.Strip
	var most uint64
	for _, c := range r.strip.cols {
		most = max(most, uint64(c[ClassRead])+uint64(c[ClassWrite])+uint64(c[ClassTrim]))
	}
	barH := s.Dy() - 6
	for i, c := range r.strip.cols {
		x := s.Min.X + i
		if c[ClassFlush] > 0 {
			r.fill(img, image.Rect(x, s.Min.Y, x+1, s.Min.Y+4), idxFlush)
		}
		n := uint64(c[ClassRead]) + uint64(c[ClassWrite]) + uint64(c[ClassTrim])
		if n == 0 {
			continue
		}
		h := barH
		if most > 1 {
			h = 1 + int(float64(barH-1)*math.Log(float64(n))/math.Log(float64(most)))
		}
		cls := ClassRead
		switch {
		case c[ClassWrite] >= c[ClassTrim] && c[ClassWrite] >= c[ClassRead]:
			cls = ClassWrite
		case c[ClassTrim] >= c[ClassRead]:
			cls = ClassTrim
		}
		r.fill(img, image.Rect(x, s.Max.Y-h, x+1, s.Max.Y), classIndex(cls, levels))
	}
	if cursor[1] > cursor[0] {
		r.fill(img, image.Rect(s.Min.X+cursor[0], s.Max.Y+1, s.Min.X+cursor[1], s.Max.Y+3), idxCursor)
	}
}
