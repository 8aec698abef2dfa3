package attach

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// Progress is how far a long job of opening or serving a source is.
type Progress struct {
	Job   string `json:"job"`  // JobIndex or JobDecode
	What  string `json:"what"` // the file the job works on
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
}

// Jobs.
const (
	// JobIndex is a pass over a file while it is opened (the first attach
	// of a gzip file inflates it to index it): the device waits for it,
	// and attach shows it.
	JobIndex = "index"
	// JobDecode is the background decode of a compressed image that is one
	// big block into a temporary file: the device is served meanwhile, and
	// list and the device's log show it.
	JobDecode = "decode"
)

// Decoded is how far the background decode of a single-block image is, in
// uncompressed bytes, for the device record and `list`.
type Decoded struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
}

// sendProgress writes p on a child's report pipe, before its Result.
func sendProgress(w io.Writer, p Progress) error {
	b, err := json.Marshal(struct {
		Progress Progress `json:"progress"`
	}{p})
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// receiveResult reads what a child writes on its report pipe: Progress
// messages, each given to progress (nil: dropped), then the one Result. A
// child that exits without a Result gives io.ErrUnexpectedEOF.
func receiveResult(r io.Reader, progress func(Progress)) (Result, error) {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Progress *Progress `json:"progress"`
			Result
		}
		if err := dec.Decode(&m); err == io.EOF {
			return Result{}, io.ErrUnexpectedEOF
		} else if err != nil {
			return Result{}, err
		}
		if m.Progress == nil {
			return m.Result, nil
		}
		if progress != nil {
			progress(*m.Progress)
		}
	}
}

// decodeLog follows the background decode of a single-block image: it
// logs a line at every 10% and at the end, with the rate, and keeps the
// device record's Decoded current (at each whole percent) once the record
// exists. Its methods may be called from any goroutine.
type decodeLog struct {
	logf func(string, ...any)
	now  func() time.Time

	mu      sync.Mutex
	name    string // what the lines are about: the file, then the device
	start   time.Time
	cur     *Decoded
	step    int64               // the last tenth logged
	percent int64               // the last percent written to the record
	write   func(Decoded) error // nil until the record exists, and after stop
}

func newDecodeLog(name string, logf func(string, ...any), now func() time.Time) *decodeLog {
	return &decodeLog{name: name, logf: logf, now: now, start: now(), percent: -1}
}

// update is the source's progress report.
func (d *decodeLog) update(done, total int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cur = &Decoded{Done: done, Total: total}
	el := d.now().Sub(d.start)
	rate := bytesize.Format(int64(float64(done) / max(el.Seconds(), 1e-3)))
	if step := done * 10 / max(total, 1); done == total && d.step < 10 {
		d.logf("%s: decoded all %s in %s (%s/s): reads no longer wait for the decoder", d.name, bytesize.Format(total), el.Round(100*time.Millisecond), rate)
		d.step = 10
	} else if step > d.step {
		d.step = step
		d.logf("%s: decoded %d%% (%s of %s) in %s, %s/s", d.name, step*10, bytesize.Format(done), bytesize.Format(total), el.Round(100*time.Millisecond), rate)
	}
	if pct := done * 100 / max(total, 1); d.write != nil && (pct > d.percent || done == total) {
		d.percent = pct
		if err := d.write(*d.cur); err != nil {
			d.logf("%s: recording the decode's progress: %v", d.name, err)
		}
	}
}

// current is how far the decode is (nil: it has not reported yet).
func (d *decodeLog) current() *Decoded {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil {
		return nil
	}
	c := *d.cur
	return &c
}

// recording names the device in later lines and writes each later step
// with write.
func (d *decodeLog) recording(name string, write func(Decoded) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.name, d.write = name, write
	if d.cur != nil {
		d.percent = d.cur.Done * 100 / max(d.cur.Total, 1)
	}
}

// stop writes no more records: the record is about to be removed or
// handed over.
func (d *decodeLog) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.write = nil
}

// String is how list shows a decode under way ("" once it is done).
func (d *Decoded) String() string {
	if d == nil || d.Done >= d.Total {
		return ""
	}
	return fmt.Sprintf("decoding %d%%", d.Done*100/max(d.Total, 1))
}

// progress routes the source's Progress: a pass over the file while it is
// opened goes to attach, the background decode to the device's log and
// record.
func (r *serverRun) progress(p Progress) {
	switch p.Job {
	case JobIndex:
		if r.so.progress != nil {
			r.so.progress(p)
		}
	case JobDecode:
		r.decodeLog(p.What).update(p.Done, p.Total)
	}
}

// decodeLog returns the log of the background decode, made at its first
// report.
func (r *serverRun) decodeLog(what string) *decodeLog {
	r.decodeOnce.Do(func() { r.decode = newDecodeLog(what, r.logger.Printf, time.Now) })
	return r.decode
}
