package pictures

import (
	"image"
	"strings"
	"unicode"
)

// A 5x7 bitmap font for the legend: the standard library has none, and
// the pictures need only capitals, digits and a little punctuation. Each
// glyph is its character on a line of its own followed by 7 rows of 5
// cells, '#' for ink. Lower case letters are drawn as capitals; anything
// else as '?'.
const fontSource = `
A
.###.
#...#
#...#
#####
#...#
#...#
#...#
B
####.
#...#
#...#
####.
#...#
#...#
####.
C
.###.
#...#
#....
#....
#....
#...#
.###.
D
####.
#...#
#...#
#...#
#...#
#...#
####.
E
#####
#....
#....
####.
#....
#....
#####
F
#####
#....
#....
####.
#....
#....
#....
G
.###.
#...#
#....
#.###
#...#
#...#
.####
H
#...#
#...#
#...#
#####
#...#
#...#
#...#
I
.###.
..#..
..#..
..#..
..#..
..#..
.###.
J
..###
...#.
...#.
...#.
...#.
#..#.
.##..
K
#...#
#..#.
#.#..
##...
#.#..
#..#.
#...#
L
#....
#....
#....
#....
#....
#....
#####
M
#...#
##.##
#.#.#
#.#.#
#...#
#...#
#...#
N
#...#
#...#
##..#
#.#.#
#..##
#...#
#...#
O
.###.
#...#
#...#
#...#
#...#
#...#
.###.
P
####.
#...#
#...#
####.
#....
#....
#....
Q
.###.
#...#
#...#
#...#
#.#.#
#..#.
.##.#
R
####.
#...#
#...#
####.
#.#..
#..#.
#...#
S
.####
#....
#....
.###.
....#
....#
####.
T
#####
..#..
..#..
..#..
..#..
..#..
..#..
U
#...#
#...#
#...#
#...#
#...#
#...#
.###.
V
#...#
#...#
#...#
#...#
#...#
.#.#.
..#..
W
#...#
#...#
#...#
#.#.#
#.#.#
#.#.#
.#.#.
X
#...#
#...#
.#.#.
..#..
.#.#.
#...#
#...#
Y
#...#
#...#
.#.#.
..#..
..#..
..#..
..#..
Z
#####
....#
...#.
..#..
.#...
#....
#####
0
.###.
#...#
#..##
#.#.#
##..#
#...#
.###.
1
..#..
.##..
..#..
..#..
..#..
..#..
.###.
2
.###.
#...#
....#
...#.
..#..
.#...
#####
3
#####
...#.
..#..
...#.
....#
#...#
.###.
4
...#.
..##.
.#.#.
#..#.
#####
...#.
...#.
5
#####
#....
####.
....#
....#
#...#
.###.
6
..##.
.#...
#....
####.
#...#
#...#
.###.
7
#####
....#
...#.
..#..
.#...
.#...
.#...
8
.###.
#...#
#...#
.###.
#...#
#...#
.###.
9
.###.
#...#
#...#
.####
....#
...#.
.##..
.
.....
.....
.....
.....
.....
.##..
.##..
,
.....
.....
.....
.....
.##..
..#..
.#...
:
.....
.##..
.##..
.....
.##..
.##..
.....
/
.....
....#
...#.
..#..
.#...
#....
.....
%
##...
##..#
...#.
..#..
.#...
#..##
...##
(
...#.
..#..
.#...
.#...
.#...
..#..
...#.
)
.#...
..#..
...#.
...#.
...#.
..#..
.#...
-
.....
.....
.....
#####
.....
.....
.....
+
.....
..#..
..#..
#####
..#..
..#..
.....
=
.....
.....
#####
.....
#####
.....
.....
_
.....
.....
.....
.....
.....
.....
#####
<
...#.
..#..
.#...
#....
.#...
..#..
...#.
>
.#...
..#..
...#.
....#
...#.
..#..
.#...
?
.###.
#...#
....#
...#.
..#..
.....
..#..
#
.#.#.
.#.#.
#####
.#.#.
#####
.#.#.
.#.#.
*
.....
..#..
#.#.#
.###.
#.#.#
..#..
.....
'
..#..
..#..
.#...
.....
.....
.....
.....
[
.###.
.#...
.#...
.#...
.#...
.#...
.###.
]
.###.
...#.
...#.
...#.
...#.
...#.
.###.
`

const (
	glyphW   = 5
	glyphH   = 7
	advance  = glyphW + 1 // pixels from one character to the next
	lineStep = glyphH + 4 // pixels from one line of text to the next
)

// font maps a character to its 7 rows, each a 5-bit mask (bit 4 leftmost).
type font map[rune][glyphH]uint8

func newFont() font {
	f := font{' ': {}}
	lines := strings.Split(strings.TrimSpace(fontSource), "\n")
	for i := 0; i+glyphH < len(lines); i += glyphH + 1 {
		var g [glyphH]uint8
		for row := range glyphH {
			for col, c := range lines[i+1+row] {
				if c == '#' {
					g[row] |= 1 << (glyphW - 1 - col)
				}
			}
		}
		f[[]rune(lines[i])[0]] = g
	}
	return f
}

// textWidth is the width in pixels of s drawn with draw.
func textWidth(s string) int {
	n := len([]rune(s))
	if n == 0 {
		return 0
	}
	return n*advance - 1
}

// draw writes s with its top left corner at (x, y) in colour index c.
func (f font) draw(img *image.Paletted, x, y int, s string, c uint8) {
	for _, r := range s {
		g, ok := f[unicode.ToUpper(r)]
		if !ok {
			g = f['?']
		}
		for row := range glyphH {
			for col := range glyphW {
				if g[row]&(1<<(glyphW-1-col)) != 0 {
					setIndex(img, x+col, y+row, c)
				}
			}
		}
		x += advance
	}
}

// setIndex is SetColorIndex that ignores points outside the image.
func setIndex(img *image.Paletted, x, y int, c uint8) {
	if (image.Point{x, y}).In(img.Rect) {
		img.Pix[img.PixOffset(x, y)] = c
	}
}
