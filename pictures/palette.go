package pictures

import (
	"image/color"
)

// Colour indices of the palette that every picture uses: paletted images
// make small PNGs and the GIF frames share one colour table.
const (
	idxBg      = iota // map cells nothing touched
	idxPanel          // around the map, the legend
	idxText           // legend text, the offset curve
	idxDim            // secondary text, frames
	idxOutside        // map cells beyond the end of the device
	idxFlush          // flush ticks
	idxCursor         // the current frame on the time strip
	idxClass0         // then, per class (read, write, trim/zero): a history shade and levels 1..levels
)

// levels is how many brightness steps a class has.
const levels = 16

const (
	classShades = levels + 1
	idxRamp     = idxClass0 + 3*classShades // the offset scale: rampSteps greys, dark at offset 0
	rampSteps   = 16
	paletteLen  = idxRamp + rampSteps
)

// newPalette builds the palette (a fresh slice: color.Palette is mutable).
func newPalette() color.Palette {
	// Base colours: read blue, write red, trim/zero green, flush yellow.
	colBg := color.RGBA{0x14, 0x18, 0x1e, 0xff}
	colPanel := color.RGBA{0x22, 0x28, 0x31, 0xff}
	colText := color.RGBA{0xe8, 0xe8, 0xe8, 0xff}
	colDim := color.RGBA{0x8a, 0x91, 0x9c, 0xff}
	colOutside := color.RGBA{0x33, 0x39, 0x42, 0xff}
	colFlush := color.RGBA{0xfa, 0xcc, 0x15, 0xff}
	colCursor := color.RGBA{0xff, 0xff, 0xff, 0xff}
	colClass := [3]color.RGBA{
		{0x3b, 0x82, 0xf6, 0xff}, // read
		{0xef, 0x44, 0x44, 0xff}, // write
		{0x22, 0xc5, 0x5e, 0xff}, // trim, zero
	}
	p := make(color.Palette, paletteLen)
	p[idxBg], p[idxPanel], p[idxText], p[idxDim] = colBg, colPanel, colText, colDim
	p[idxOutside], p[idxFlush], p[idxCursor] = colOutside, colFlush, colCursor
	for c, full := range colClass {
		base := idxClass0 + c*classShades
		p[base] = mix(colBg, full, 0.2)
		for l := 1; l <= levels; l++ {
			p[base+l] = mix(colBg, full, 0.3+0.7*float64(l)/levels)
		}
	}
	for i := range rampSteps {
		v := uint8(0x40 + i*(0xf0-0x40)/(rampSteps-1))
		p[idxRamp+i] = color.RGBA{v, v, v, 0xff}
	}
	return p
}

func mix(a, b color.RGBA, f float64) color.RGBA {
	m := func(x, y uint8) uint8 { return uint8(float64(x) + (float64(y)-float64(x))*f + 0.5) }
	return color.RGBA{m(a.R, b.R), m(a.G, b.G), m(a.B, b.B), 0xff}
}

// classIndex is the palette index of class c (ClassRead, ClassWrite or
// ClassTrim) at brightness level 1..levels, or its history shade for 0.
func classIndex(c Class, level int) uint8 {
	return uint8(idxClass0 + (int(c)-int(ClassRead))*classShades + level)
}

// Classify tells what a colour of a picture stands for on the map: the
// class of request and its brightness level (1..16, 16 the most requests;
// 0 for the dim shade that marks earlier frames of an animation), or
// ClassFlush for the flush colour. ok is false for colours that are not a
// request's (background, text, the offset scale).
func Classify(c color.Color) (class Class, level int, ok bool) {
	r, g, b, _ := c.RGBA()
	p := newPalette()
	for i := range p {
		pr, pg, pb, _ := p[i].RGBA()
		if pr != r || pg != g || pb != b {
			continue
		}
		switch {
		case i == idxFlush:
			return ClassFlush, levels, true
		case i >= idxClass0 && i < idxRamp:
			k := i - idxClass0
			return ClassRead + Class(k/classShades), k % classShades, true
		}
		return ClassNone, 0, false
	}
	return ClassNone, 0, false
}
