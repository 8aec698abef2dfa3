package pictures

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/png"
	"io"
	"math/bits"
	"time"
)

// Options say what to draw. The zero value draws a 512 x 512 map, 50
// frames by time.
type Options struct {
	// DeviceSize is the size of the device in bytes; 0 takes the end of
	// the highest byte range in the log, rounded up to a power of two.
	DeviceSize uint64
	// Side is the width and height of the map in pixels: a power of two
	// from 16 to 4096 (0: 512).
	Side int
	// Frames is the number of frames of an animation (0: 50).
	Frames int
	// ByRequests cuts the animation into frames of equal numbers of
	// requests instead of equal spans of time.
	ByRequests bool
	// Delay is how long each GIF frame shows (0: 100ms; GIF counts in
	// hundredths of a second).
	Delay time.Duration
	// Title is the line above the map (e.g. the log's name).
	Title string
}

// MaxFrames bounds Options.Frames: every frame of a GIF is held in memory
// until the end.
const MaxFrames = 1000

// ErrEmptyLog is returned for a log without requests.
var ErrEmptyLog = errors.New("no requests in the log")

// ErrUnknownSize is returned for a log of flushes only when
// Options.DeviceSize is not given: nothing tells the device's size.
var ErrUnknownSize = errors.New("the log has only flushes: the device size is unknown")

func (o *Options) defaults() error {
	if o.Side == 0 {
		o.Side = 512
	}
	if o.Frames == 0 {
		o.Frames = 50
	}
	if o.Frames < 1 || o.Frames > MaxFrames {
		return fmt.Errorf("%d frames: out of range 1..%d", o.Frames, MaxFrames)
	}
	if o.Delay == 0 {
		o.Delay = 100 * time.Millisecond
	}
	return nil
}

// prepare reads the log once for its summary and lays the picture out;
// log is then back at its start.
func prepare(log io.ReadSeeker, opts *Options) (*renderer, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	sum, err := Summarize(log)
	if err != nil {
		return nil, err
	}
	if sum.Records == 0 {
		return nil, ErrEmptyLog
	}
	size := opts.DeviceSize
	if size == 0 {
		if sum.MaxEnd == 0 {
			return nil, ErrUnknownSize
		}
		size = sum.MaxEnd
		if size&(size-1) != 0 {
			if bits.Len64(size) == 64 {
				size = 1 << 63
			} else {
				size = 1 << bits.Len64(size)
			}
		}
	}
	l, err := NewLayout(size, opts.Side)
	if err != nil {
		return nil, err
	}
	if _, err := log.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewinding the log: %w", err)
	}
	return newRenderer(l, *opts, sum), nil
}

// Frame is one picture of an animation.
type Frame struct {
	Image *image.Paletted
	Label string // what it shows, e.g. "frame 3/50: 1.200-1.600 s"
}

// run reads the log a second time and draws it: with frame != nil, one
// Frame per slice of the run first; then the whole run, which it returns.
// A record is in the slice of its time (or of its position in the log,
// with ByRequests); the log is in the order replies were sent, so a
// request that started in a slice already drawn is counted in the current
// one.
func (r *renderer) run(log io.Reader, frame func(Frame) error) (*image.Paletted, error) {
	total := newHeat(r.l.Cells())
	var all, ft tally
	var cur *heat
	if frame != nil {
		cur = newHeat(r.l.Cells())
	}
	k := 0 // the frame being filled
	emit := func() error {
		label := r.frameLabel(k)
		img := r.picture(cur, total, &ft, label, r.frameColumns(k))
		total.merge(cur)
		cur.reset()
		ft = tally{}
		k++
		return frame(Frame{Image: img, Label: label})
	}
	lr := NewReader(log)
	var idx int64
	for lr.Next() {
		rec := lr.Record()
		all.count(rec)
		if frame == nil {
			r.add(rec, total, nil)
			continue
		}
		for j := r.frameOf(rec, idx); j > k; {
			if err := emit(); err != nil {
				return nil, err
			}
		}
		r.add(rec, cur, &ft)
		idx++
	}
	if err := lr.Err(); err != nil {
		return nil, err
	}
	for frame != nil && k < r.opts.Frames {
		if err := emit(); err != nil {
			return nil, err
		}
	}
	return r.picture(total, nil, &all, r.wholeLabel(), [2]int{}), nil
}

// frameOf is the frame that the idx'th record of the log, rec, falls in.
func (r *renderer) frameOf(rec *Record, idx int64) int {
	n := r.opts.Frames
	if r.opts.ByRequests {
		return int(idx * int64(n) / r.sum.Records)
	}
	span := r.sum.Last.Sub(r.sum.First)
	if span <= 0 {
		return 0
	}
	j := int(float64(rec.Time.Sub(r.sum.First)) / float64(span) * float64(n))
	return min(max(j, 0), n-1)
}

// frameSpan is the time frame k covers, from the start of the run; with
// ByRequests, that of its requests (approximately: by position).
func (r *renderer) frameSpan(k int) (from, to time.Duration) {
	span := r.sum.Last.Sub(r.sum.First)
	n := time.Duration(r.opts.Frames)
	return span * time.Duration(k) / n, span * time.Duration(k+1) / n
}

func (r *renderer) frameLabel(k int) string {
	if r.opts.ByRequests {
		first := int64(k) * r.sum.Records / int64(r.opts.Frames)
		last := int64(k+1)*r.sum.Records/int64(r.opts.Frames) - 1
		return fmt.Sprintf("frame %d/%d: requests %d-%d", k+1, r.opts.Frames, first+1, last+1)
	}
	from, to := r.frameSpan(k)
	return fmt.Sprintf("frame %d/%d: %.3f-%.3f s", k+1, r.opts.Frames, from.Seconds(), to.Seconds())
}

func (r *renderer) wholeLabel() string {
	return fmt.Sprintf("whole run: %.3f s", r.sum.Last.Sub(r.sum.First).Seconds())
}

// frameColumns is the part of the time strip frame k covers.
func (r *renderer) frameColumns(k int) [2]int {
	if r.opts.ByRequests {
		return [2]int{} // not a span of time
	}
	w := r.l.Strip.Dx()
	n := r.opts.Frames
	return [2]int{k * w / n, max((k+1)*w/n, k*w/n+1)}
}

// WritePNG draws the whole run as a heat map.
func WritePNG(w io.Writer, log io.ReadSeeker, opts Options) error {
	r, err := prepare(log, &opts)
	if err != nil {
		return err
	}
	img, err := r.run(log, nil)
	if err != nil {
		return err
	}
	return png.Encode(w, img)
}

// WriteGIF draws the run as an animation of opts.Frames frames, looping,
// the last frame held for two seconds.
func WriteGIF(w io.Writer, log io.ReadSeeker, opts Options) error {
	r, err := prepare(log, &opts)
	if err != nil {
		return err
	}
	anim := &gif.GIF{Config: image.Config{ColorModel: r.pal, Width: r.l.Bounds.Dx(), Height: r.l.Bounds.Dy()}}
	delay := int(max(opts.Delay/(10*time.Millisecond), 1))
	_, err = r.run(log, func(f Frame) error {
		anim.Image = append(anim.Image, f.Image)
		anim.Delay = append(anim.Delay, delay)
		return nil
	})
	if err != nil {
		return err
	}
	anim.Delay[len(anim.Delay)-1] = max(delay, 200)
	return gif.EncodeAll(w, anim)
}

// pngDataURL encodes img as a data: URL.
func pngDataURL(img image.Image) (string, error) {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return "", err
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b.Bytes()), nil
}
