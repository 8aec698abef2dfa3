package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// progress shows how far a long job is (pack's compression, attach's first
// pass over a gzip file) on stderr: on a terminal, one line redrawn in place
// with a bar, the bytes done of the total, the percentage, the rate and the
// time left; otherwise a line at every 10%.
type progress struct {
	w     io.Writer
	label string // what is done: "pack", "indexing disk.gz"
	size  int64
	tty   bool
	now   func() time.Time
	start time.Time
	last  time.Time
	step  int64 // the last 10% step printed (not a terminal)
	drawn bool
}

// redraw: a terminal's line is redrawn at most this often, and at the end.
const redraw = 200 * time.Millisecond

func newProgress(w io.Writer, label string, size int64, tty bool, now func() time.Time) *progress {
	return &progress{w: w, label: label, size: size, tty: tty, now: now, start: now()}
}

// update shows done bytes of the total; note, if not "", is added to a
// terminal's line.
func (p *progress) update(done int64, note string) {
	now := p.now()
	pct := 100 * float64(done) / float64(max(1, p.size))
	if !p.tty {
		if step := int64(pct) / 10; step > p.step {
			p.step = step
			fmt.Fprintf(p.w, "nbdloop: %s: %d%% (%s of %s)\n", p.label, step*10, bytesize.Format(done), bytesize.Format(p.size))
		}
		return
	}
	if p.drawn && now.Sub(p.last) < redraw && done < p.size {
		return
	}
	p.last = now
	const width = 30
	n := min(int(pct/100*width), width)
	rate := float64(done) / max(now.Sub(p.start).Seconds(), 1e-3)
	left := ""
	if rate > 0 && done < p.size {
		left = fmt.Sprintf(", %v left", time.Duration(float64(p.size-done)/rate*float64(time.Second)).Round(time.Second))
	}
	if note != "" {
		note = ", " + note
	}
	fmt.Fprintf(p.w, "\r\033[K%s: [%s%s] %3.0f%% %s of %s, %s/s%s%s", p.label,
		strings.Repeat("=", n), strings.Repeat(" ", width-n), pct,
		bytesize.Format(done), bytesize.Format(p.size), bytesize.Format(int64(rate)), note, left)
	p.drawn = true
}

// done clears a terminal's line.
func (p *progress) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// attachProgress shows the Progress attach reports while the device is not
// ready yet: one progress per job and file, started again when its total
// changes.
type attachProgress struct {
	w     io.Writer
	tty   bool
	now   func() time.Time
	cur   *progress
	key   attach.Progress // the job, file and total of cur
	ended bool
}

func newAttachProgress(w io.Writer) *attachProgress {
	return &attachProgress{w: w, tty: isTerminal(w), now: time.Now}
}

// report is attach.Config.Progress.
func (a *attachProgress) report(p attach.Progress) {
	if a.ended {
		return
	}
	key := attach.Progress{Job: p.Job, What: p.What, Total: p.Total}
	if a.cur == nil || key != a.key {
		if a.cur != nil {
			a.cur.done()
		}
		label := p.What
		if p.Job == attach.JobIndex {
			label = "indexing " + p.What
		}
		a.cur, a.key = newProgress(a.w, label, p.Total, a.tty, a.now), key
	}
	a.cur.update(p.Done, "")
}

// done clears a terminal's line before attach prints its result.
func (a *attachProgress) done() {
	a.ended = true
	if a.cur != nil {
		a.cur.done()
	}
}

// stateText is the STATE column of list: the state, and how far a
// running device's background decode is while it runs.
func stateText(d attach.Device) string {
	if s := d.Decoded.String(); s != "" && d.State == attach.StateRunning {
		return d.State + ", " + s
	}
	return d.State
}
