package pictures

import (
	"image"
	"strings"
	"testing"
)

// TestFont: every glyph of the source is 7 rows of 5 cells, each
// character the legend needs has ink, and lower case draws as capitals.
func TestFont(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(fontSource), "\n")
	if len(lines)%(glyphH+1) != 0 {
		t.Fatalf("font source has %d lines, not a multiple of %d", len(lines), glyphH+1)
	}
	for i := 0; i < len(lines); i += glyphH + 1 {
		if len([]rune(lines[i])) != 1 {
			t.Errorf("line %d: %q is not one character", i+1, lines[i])
		}
		for r := 1; r <= glyphH; r++ {
			if l := lines[i+r]; len(l) != glyphW || strings.Trim(l, ".#") != "" {
				t.Errorf("glyph %q row %d = %q, want %d of . and #", lines[i], r, l, glyphW)
			}
		}
	}
	f := newFont()
	for _, r := range "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:/%()-+=_<>?#*'[]" {
		g, ok := f[r]
		if !ok || g == [glyphH]uint8{} {
			t.Errorf("glyph %q is missing or empty", r)
		}
	}
	pal := newPalette()
	a := image.NewPaletted(image.Rect(0, 0, 40, 10), pal)
	b := image.NewPaletted(image.Rect(0, 0, 40, 10), pal)
	f.draw(a, 1, 1, "mib ~", idxText)
	f.draw(b, 1, 1, "MIB ?", idxText)
	if string(a.Pix) != string(b.Pix) {
		t.Error(`"mib ~" does not draw as "MIB ?"`)
	}
	if w := textWidth("MIB"); w != 3*advance-1 {
		t.Errorf("textWidth(MIB) = %d, want %d", w, 3*advance-1)
	}
}
