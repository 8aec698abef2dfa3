package pictures

import (
	"bytes"
	"errors"
	"image"
	"image/gif"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// writeLog writes reqs to a log file with the real log filter and returns
// its contents.
func writeLog(t *testing.T, reqs []request.Request) []byte {
	t.Helper()
	mem, err := sources.NewMemory(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "log.jsonl")
	l, err := filters.NewLog(mem, filters.LogOptions{File: path}, filters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		l.Observe(r)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func req(op request.Op, off uint64, length uint64, at time.Duration) request.Request {
	return request.Request{Op: op, Offset: off, Length: length, Start: t0.Add(at), Latency: 20 * time.Microsecond}
}

func drawPNG(t *testing.T, log []byte, opts Options) image.Image {
	t.Helper()
	var out bytes.Buffer
	if err := WritePNG(&out, bytes.NewReader(log), opts); err != nil {
		t.Fatalf("WritePNG: %v", err)
	}
	img, err := png.Decode(&out)
	if err != nil {
		t.Fatalf("decoding the PNG: %v", err)
	}
	return img
}

// mapClasses returns, per map cell (index along the curve), the class and
// level of its pixel; background cells are ClassNone with level -1,
// cells past the end of the device ClassNone with level -2.
func mapClasses(t *testing.T, img image.Image, l Layout) (cls []Class, lvl []int) {
	t.Helper()
	if img.Bounds() != l.Bounds {
		t.Fatalf("picture is %v, want %v", img.Bounds(), l.Bounds)
	}
	pal := newPalette()
	for d := uint64(0); d < l.Cells(); d++ {
		x, y := HilbertXY(l.Order, d)
		c := img.At(l.Map.Min.X+x, l.Map.Min.Y+y)
		k, v, ok := Classify(c)
		switch {
		case ok:
		case pal.Index(c) == idxBg && pal[idxBg] == pal.Convert(c):
			v = -1
		case pal.Index(c) == idxOutside && pal[idxOutside] == pal.Convert(c):
			v = -2
		default:
			t.Fatalf("map cell %d at (%d, %d) has colour %v, neither background nor a request's", d, x, y, c)
		}
		cls, lvl = append(cls, k), append(lvl, v)
	}
	return cls, lvl
}

// TestDrawOneWrite: a log with one write colours exactly the pixels of
// its bytes, in the brightest write colour; every other map pixel is
// background, or grey past the end of the device.
func TestDrawOneWrite(t *testing.T) {
	tests := []struct {
		name   string
		size   uint64 // device size given; 0 derives it
		side   int
		off    uint64
		length uint64
	}{
		{"superblock", 1 << 20, 64, 1024, 1024},      // 256 B pixels: 4 of them
		{"one pixel", 1 << 20, 64, 4096, 256},        // exactly one
		{"unaligned", 1 << 20, 64, 1000, 100},        // straddles two pixels
		{"last byte", 1 << 20, 64, 1<<20 - 1, 1},     // the last pixel
		{"derived size", 0, 16, 3 << 20, 1},          // 4 MiB: 16 KiB pixels
		{"partial device", 3<<20 + 1, 32, 0, 65536},  // 4 KiB pixels, grey past the end
		{"large pixels", 8 << 30, 128, 1 << 30, 512}, // 512 KiB pixels
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := writeLog(t, []request.Request{req(request.OpWrite, tt.off, tt.length, 0)})
			img := drawPNG(t, log, Options{DeviceSize: tt.size, Side: tt.side})
			size := tt.size
			if size == 0 {
				size = 4 << 20
			}
			l, err := NewLayout(size, tt.side)
			if err != nil {
				t.Fatal(err)
			}
			cls, lvl := mapClasses(t, img, l)
			first, last := tt.off/l.CellBytes, (tt.off+uint64(tt.length)-1)/l.CellBytes
			written := 0
			for d := range cls {
				inside := uint64(d)*l.CellBytes < size
				switch {
				case uint64(d) >= first && uint64(d) <= last:
					if cls[d] != ClassWrite || lvl[d] != levels {
						t.Errorf("cell %d (offset %d) = %v level %d, want write level %d", d, uint64(d)*l.CellBytes, cls[d], lvl[d], levels)
					}
					written++
				case inside && (cls[d] != ClassNone || lvl[d] != -1):
					t.Errorf("cell %d (offset %d) = %v level %d, want background", d, uint64(d)*l.CellBytes, cls[d], lvl[d])
				case !inside && lvl[d] != -2:
					t.Errorf("cell %d (offset %d, past the end) = %v level %d, want grey", d, uint64(d)*l.CellBytes, cls[d], lvl[d])
				}
			}
			if want := int(last - first + 1); written != want {
				t.Errorf("%d write pixels, want %d", written, want)
			}
			p, ok := l.Pixel(tt.off)
			if !ok {
				t.Fatalf("Pixel(%d) is off the map", tt.off)
			}
			if c, _, _ := Classify(img.At(p.X, p.Y)); c != ClassWrite {
				t.Errorf("pixel %v of offset %d = %v, want write", p, tt.off, c)
			}
			if off, ok := l.Offset(p); !ok || off != first*l.CellBytes {
				t.Errorf("Offset(%v) = %d, %v, want %d", p, off, ok, first*l.CellBytes)
			}
		})
	}
}

// TestDrawClasses: each kind of request has its colour; the last request
// to touch a pixel gives its colour, the number of them its brightness;
// flushes leave the map alone.
func TestDrawClasses(t *testing.T) {
	const cell = 256 // 1 MiB on 64 x 64
	reqs := []request.Request{
		req(request.OpRead, 0*cell, cell, 0),
		req(request.OpTrim, 1*cell, cell, time.Millisecond),
		req(request.OpZero, 2*cell, cell, 2*time.Millisecond),
		req(request.OpRead, 3*cell, cell, 3*time.Millisecond), // a read, then a write: 1+15*ln 2/ln 3 = level 10
		req(request.OpWrite, 3*cell, cell, 4*time.Millisecond),
		req(request.OpWrite, 4*cell, 2*cell, 5*time.Millisecond), // a write, then two reads: read
		req(request.OpRead, 4*cell, cell, 6*time.Millisecond),
		req(request.OpRead, 4*cell, cell, 7*time.Millisecond),
		req(request.OpFlush, 0, 0, 8*time.Millisecond),
	}
	img := drawPNG(t, writeLog(t, reqs), Options{DeviceSize: 1 << 20, Side: 64})
	l, _ := NewLayout(1<<20, 64)
	cls, lvl := mapClasses(t, img, l)
	want := []struct {
		c Class
		l int
	}{
		{ClassRead, 1}, {ClassTrim, 1}, {ClassTrim, 1}, {ClassWrite, 10}, {ClassRead, levels}, {ClassWrite, 1},
	}
	for d, w := range want {
		if cls[d] != w.c || lvl[d] != w.l {
			t.Errorf("cell %d = %v level %d, want %v level %d", d, cls[d], lvl[d], w.c, w.l)
		}
	}
	for d := len(want); d < len(cls); d++ {
		if cls[d] != ClassNone {
			t.Fatalf("cell %d = %v, want background", d, cls[d])
		}
	}
	// The flush is a tick on the time strip.
	flushes := 0
	for x := l.Strip.Min.X; x < l.Strip.Max.X; x++ {
		if c, _, _ := Classify(img.At(x, l.Strip.Min.Y)); c == ClassFlush {
			flushes++
		}
	}
	if flushes != 1 {
		t.Errorf("%d flush ticks on the strip, want 1", flushes)
	}
}

// TestGIFFrames: the animation has the frames asked for, cut by time or
// by requests, and a write shows brightly in its frame and dimly after.
func TestGIFFrames(t *testing.T) {
	var reqs []request.Request
	// 10 writes, one per 100 ms, each to its own pixel; then 30 reads of
	// pixel 0 in the last 10 ms.
	for i := range 10 {
		reqs = append(reqs, req(request.OpWrite, uint64(i)*256, 256, time.Duration(i)*100*time.Millisecond))
	}
	for i := range 30 {
		reqs = append(reqs, req(request.OpRead, 100<<10, 256, 900*time.Millisecond+time.Duration(i)*300*time.Microsecond))
	}
	log := writeLog(t, reqs)
	l, _ := NewLayout(1<<20, 64)
	tests := []struct {
		name   string
		frames int
		by     bool
		// the frame each write is brightest in
		writeFrame func(i int) int
	}{
		{"10 by time", 10, false, func(i int) int { return i }},
		{"5 by time", 5, false, func(i int) int { return i / 2 }},
		{"1 frame", 1, false, func(int) int { return 0 }},
		{"4 by requests", 4, true, func(i int) int { return i / 10 }},
		{"20 by requests", 20, true, func(i int) int { return i / 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := WriteGIF(&out, bytes.NewReader(log), Options{DeviceSize: 1 << 20, Side: 64, Frames: tt.frames, ByRequests: tt.by}); err != nil {
				t.Fatal(err)
			}
			g, err := gif.DecodeAll(&out)
			if err != nil {
				t.Fatalf("decoding the GIF: %v", err)
			}
			if len(g.Image) != tt.frames {
				t.Fatalf("%d frames, want %d", len(g.Image), tt.frames)
			}
			for i := range 10 {
				p, _ := l.Pixel(uint64(i) * 256)
				for k, fr := range g.Image {
					c, lv, ok := Classify(fr.At(p.X, p.Y))
					wf := tt.writeFrame(i)
					switch {
					case k < wf && ok:
						t.Errorf("frame %d: write %d (frame %d) already shows: %v level %d", k, i, wf, c, lv)
					case k == wf && (c != ClassWrite || lv == 0):
						t.Errorf("frame %d: write %d = %v level %d, want bright write", k, i, c, lv)
					case k > wf && (c != ClassWrite || lv != 0):
						t.Errorf("frame %d: write %d (frame %d) = %v level %d, want the dim write shade", k, i, wf, c, lv)
					}
				}
			}
		})
	}
}

func TestDrawErrors(t *testing.T) {
	tests := []struct {
		name string
		log  string
		opts Options
		want string
		line int   // the LineError's line; 0 for none
		is   error // errors.Is must find it, when not nil
	}{
		{"empty", "", Options{}, ErrEmptyLog.Error(), 0, ErrEmptyLog},
		{"only flushes", string(writeLog(t, []request.Request{req(request.OpFlush, 0, 0, 0)})), Options{}, "only flushes", 0, ErrUnknownSize},
		{"not json", "{\"time\":\"2026-11-26T12:00:00Z\",\"op\":\"read\"}\nhello\n", Options{}, "line 2:", 2, nil},
		{"no time", "{\"op\":\"read\"}\n", Options{}, "line 1: no time", 1, nil},
		{"offset past 2^63", "{\"time\":\"2026-11-26T12:00:00Z\",\"op\":\"read\",\"offset\":9223372036854775808,\"length\":0}\n", Options{}, "line 1: offset 9223372036854775808, length 0: past 2^63-1 bytes, the largest device", 1, nil},
		{"range past 2^63", "{\"time\":\"2026-11-26T12:00:00Z\",\"op\":\"write\",\"offset\":0}\n{\"time\":\"2026-11-26T12:00:00Z\",\"op\":\"write\",\"offset\":9223372036854771712,\"length\":4097}\n", Options{}, "line 2: offset 9223372036854771712, length 4097: past 2^63-1", 2, nil},
		{"range wrapping", "{\"time\":\"2026-11-26T12:00:00Z\",\"op\":\"trim\",\"offset\":18446744073709551615,\"length\":18446744073709551615}\n", Options{}, "line 1: offset 18446744073709551615, length 18446744073709551615: past 2^63-1", 1, nil},
		{"bad side", string(writeLog(t, []request.Request{req(request.OpRead, 0, 512, 0)})), Options{Side: 100}, "not a power of two", 0, nil},
		{"too many frames", "", Options{Frames: MaxFrames + 1}, "out of range", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := WritePNG(&bytes.Buffer{}, strings.NewReader(tt.log), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("WritePNG = %v, want an error containing %q", err, tt.want)
			}
			line := 0 // of the LineError, if any
			if le := (*LineError)(nil); errors.As(err, &le) {
				line = le.Line
			}
			if line != tt.line {
				t.Errorf("WritePNG = %v: LineError of line %d, want %d", err, line, tt.line)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("WritePNG = %v, want errors.Is %v", err, tt.is)
			}
		})
	}
	if err := WritePNG(&bytes.Buffer{}, strings.NewReader(""), Options{}); !errors.Is(err, ErrEmptyLog) {
		t.Errorf("empty log: %v, want ErrEmptyLog", err)
	}
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{{0, "0B"}, {512, "512B"}, {1024, "1K"}, {1536, "1.5K"}, {64 << 20, "64M"}, {1 << 63, "8E"}, {1<<64 - 1, "8E"}}
	for _, tt := range tests {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// FuzzReader: no input panics the reader or the summary, and every record
// it returns has a time.
func FuzzReader(f *testing.F) {
	f.Add([]byte(`{"time":"2026-11-26T14:39:59.123456789Z","conn":0,"op":"write","offset":1024,"length":4096,"flags":"fua","latency_us":37.5,"error":""}` + "\n"))
	f.Add([]byte("\n\n{\"time\":\"2026-11-26T14:39:59Z\",\"op\":\"trim\",\"offset\":18446744073709551615,\"length\":18446744073709551615}"))
	f.Add([]byte(`{"time":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		for r.Next() {
			if r.Record().Time.IsZero() {
				t.Fatalf("line %d: a record without time", r.Line())
			}
		}
		s, err := Summarize(bytes.NewReader(b))
		if err == nil && s.Records > 0 {
			var out bytes.Buffer
			if err := WritePNG(&out, bytes.NewReader(b), Options{Side: 16, DeviceSize: max(s.MaxEnd, 1)}); err != nil {
				t.Fatalf("WritePNG of a log Summarize accepts: %v", err)
			}
		}
	})
}
