package pictures

import (
	"html/template"
	"io"
	"strconv"
)

// htmlPage is the page WriteHTML writes: everything inline (the frames
// are PNG data: URLs), so it works from a file with no network. The script
// reads the palette to name the request under the pointer, and computes
// the offset from the Hilbert index of the pixel with BigInt (offsets go
// up to 2^63, beyond a double's exact integers).
const htmlPage = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { background: #222831; color: #e8e8e8; font: 14px/1.4 sans-serif; margin: 16px; }
canvas { image-rendering: pixelated; display: block; cursor: crosshair; }
#controls { margin: 8px 0; display: flex; gap: 12px; align-items: center; }
#slider { width: 480px; }
#readout { font-family: monospace; min-height: 1.4em; }
</style>
</head>
<body>
<canvas id="c" width="{{.Width}}" height="{{.Height}}"></canvas>
<div id="controls">
<input type="range" id="slider" min="0" max="{{.Last}}" value="{{.Last}}" step="1" aria-label="time">
<button id="play" type="button">play</button>
<span id="label"></span>
</div>
<div id="readout">move the pointer over the map</div>
<script>
"use strict";
const D = {{.Data}};
const canvas = document.getElementById("c");
const ctx = canvas.getContext("2d", {willReadFrequently: true});
const slider = document.getElementById("slider");
const label = document.getElementById("label");
const readout = document.getElementById("readout");
const play = document.getElementById("play");
const classes = new Map(D.palette.map(p => [p[0] + "," + p[1] + "," + p[2], [p[3], p[4]]]));
const images = D.frames.map(f => { const i = new Image(); i.src = f.src; return i; });
const cellBytes = BigInt(D.cellBytes), deviceSize = BigInt(D.deviceSize);
let shown = -1, timer = null;

function show(k) {
  const img = images[k];
  const paint = () => {
    if (Number(slider.value) !== k) return;
    ctx.drawImage(img, 0, 0);
    label.textContent = D.frames[k].label;
    shown = k;
    window.nbdloopShown = k;
  };
  if (img.complete && img.naturalWidth > 0) paint(); else img.addEventListener("load", paint, {once: true});
}

// hilbert maps a pixel of the map to its index along the curve.
function hilbert(order, x, y) {
  const n = 1 << order;
  let d = 0;
  for (let s = n >> 1; s > 0; s >>= 1) {
    const rx = (x & s) ? 1 : 0, ry = (y & s) ? 1 : 0;
    d += s * s * ((3 * rx) ^ ry);
    if (ry === 0) {
      if (rx === 1) { x = n - 1 - x; y = n - 1 - y; }
      const t = x; x = y; y = t;
    }
  }
  return d;
}

function human(b) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let v = Number(b), i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toString() : v.toFixed(1)) + " " + u[i];
}

function describe(x, y) {
  const m = D.map;
  if (x < m[0] || y < m[1] || x >= m[2] || y >= m[3]) return null;
  const off = BigInt(hilbert(D.order, x - m[0], y - m[1])) * cellBytes;
  if (off >= deviceSize) return "beyond the end of the device";
  let end = off + cellBytes;
  if (end > deviceSize) end = deviceSize;
  const p = ctx.getImageData(x, y, 1, 1).data;
  const c = classes.get(p[0] + "," + p[1] + "," + p[2]);
  let what = "untouched";
  if (c) what = c[1] === 0 ? c[0] + " (in an earlier frame)" : c[0] + ", brightness " + c[1] + "/16";
  return "offset " + off + "-" + (end - 1n) + " (" + human(off) + "): " + what;
}

canvas.addEventListener("mousemove", e => {
  const r = canvas.getBoundingClientRect();
  const x = Math.floor((e.clientX - r.left) * canvas.width / r.width);
  const y = Math.floor((e.clientY - r.top) * canvas.height / r.height);
  const s = describe(x, y);
  if (s !== null) readout.textContent = s;
});
slider.addEventListener("input", () => show(Number(slider.value)));
play.addEventListener("click", () => {
  if (timer !== null) { clearInterval(timer); timer = null; play.textContent = "play"; return; }
  play.textContent = "stop";
  slider.value = "0";
  show(0);
  timer = setInterval(() => {
    const k = Number(slider.value) + 1;
    if (k > Number(slider.max)) { clearInterval(timer); timer = null; play.textContent = "play"; return; }
    slider.value = String(k);
    show(k);
  }, D.delayMs);
});
window.nbdloopDescribe = describe;
show(Number(slider.value));
</script>
</body>
</html>
`

type htmlFrame struct {
	Src   string `json:"src"`
	Label string `json:"label"`
}

type htmlData struct {
	Order      int         `json:"order"`
	CellBytes  string      `json:"cellBytes"`
	DeviceSize string      `json:"deviceSize"`
	Map        [4]int      `json:"map"` // x0, y0, x1, y1
	Palette    [][]any     `json:"palette"`
	Frames     []htmlFrame `json:"frames"`
	DelayMs    int64       `json:"delayMs"`
}

// WriteHTML writes one self-contained page: opts.Frames frames and the
// whole run (shown first) on a canvas, a slider to move through them, and
// the offset and kind of request under the pointer.
func WriteHTML(w io.Writer, log io.ReadSeeker, opts Options) error {
	r, err := prepare(log, &opts)
	if err != nil {
		return err
	}
	l := r.l
	d := htmlData{
		Order:      l.Order,
		CellBytes:  strconv.FormatUint(l.CellBytes, 10),
		DeviceSize: strconv.FormatUint(l.DeviceSize, 10),
		Map:        [4]int{l.Map.Min.X, l.Map.Min.Y, l.Map.Max.X, l.Map.Max.Y},
		DelayMs:    opts.Delay.Milliseconds(),
	}
	for i, c := range r.pal {
		cl, lv, ok := Classify(c)
		if !ok || cl == ClassFlush {
			continue
		}
		rr, gg, bb, _ := r.pal[i].RGBA()
		d.Palette = append(d.Palette, []any{rr >> 8, gg >> 8, bb >> 8, cl.String(), lv})
	}
	whole, err := r.run(log, func(f Frame) error {
		src, err := pngDataURL(f.Image)
		d.Frames = append(d.Frames, htmlFrame{Src: src, Label: f.Label})
		return err
	})
	if err != nil {
		return err
	}
	src, err := pngDataURL(whole)
	if err != nil {
		return err
	}
	d.Frames = append(d.Frames, htmlFrame{Src: src, Label: r.wholeLabel()})
	t := template.Must(template.New("page").Parse(htmlPage))
	title := opts.Title
	if title == "" {
		title = "nbdloop draw"
	}
	return t.Execute(w, map[string]any{
		"Title": title, "Width": l.Bounds.Dx(), "Height": l.Bounds.Dy(),
		"Last": len(d.Frames) - 1, "Data": d,
	})
}
