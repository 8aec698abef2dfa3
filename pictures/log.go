package pictures

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
)

// Record is one line of the log filter's output (see filters.Log for the
// format). Fields that a later version adds are ignored. Op and Flags are
// kept as written: the names of request.Op and request.Flags, or words a
// later version adds (Class tells which Op a name is).
type Record struct {
	Time      time.Time `json:"time"`
	Conn      int       `json:"conn"`
	Op        string    `json:"op"`
	Offset    uint64    `json:"offset"`
	Length    uint64    `json:"length"`
	Flags     string    `json:"flags"`
	LatencyUS float64   `json:"latency_us"`
	Error     string    `json:"error"`
}

// maxLine bounds one log line; the log filter writes about 150 bytes.
const maxLine = 64 << 10

// Class is the kind of request a pixel stands for.
type Class int

// The classes, in the order the legend lists them. Trim and zero share
// one: both make the range read back as zeros.
const (
	ClassNone Class = iota
	ClassRead
	ClassWrite
	ClassTrim
	ClassFlush
)

func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassRead:
		return "read"
	case ClassWrite:
		return "write"
	case ClassTrim:
		return "trim/zero"
	case ClassFlush:
		return "flush"
	}
	return fmt.Sprintf("class%d", int(c))
}

// Class returns the kind of request r is, or ClassNone for an operation
// this version does not know (a later NBD command, or cmdN).
func (r *Record) Class() Class {
	op, ok := request.ParseOp(r.Op)
	if !ok {
		return ClassNone
	}
	switch op {
	case request.OpRead:
		return ClassRead
	case request.OpWrite:
		return ClassWrite
	case request.OpTrim, request.OpZero:
		return ClassTrim
	case request.OpFlush:
		return ClassFlush
	}
	return ClassNone
}

// maxEnd is where the largest device ends (a device's size is an int64).
const maxEnd = 1<<63 - 1

// Reader reads log records one at a time, like bufio.Scanner: call Next
// until it returns false, then Err. Empty lines are skipped; a line that is
// not a JSON object with a time, or whose byte range ends past 2^63-1, stops
// the reader with an error that names the line.
type Reader struct {
	s    *bufio.Scanner
	line int
	rec  Record
	err  error
}

// NewReader reads records from r.
func NewReader(r io.Reader) *Reader {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 4096), maxLine)
	return &Reader{s: s}
}

// Next reads the next record; it returns false at the end of the log or
// at the first error.
func (r *Reader) Next() bool {
	if r.err != nil {
		return false
	}
	for r.s.Scan() {
		r.line++
		b := r.s.Bytes()
		if len(b) == 0 {
			continue
		}
		r.rec = Record{}
		if err := json.Unmarshal(b, &r.rec); err != nil {
			r.err = &LineError{Line: r.line, Err: err}
			return false
		}
		if r.rec.Time.IsZero() {
			r.err = &LineError{Line: r.line, Err: errors.New("no time: not a line of the log filter")}
			return false
		}
		if end := r.rec.Offset + r.rec.Length; r.rec.Offset > maxEnd || end > maxEnd || end < r.rec.Offset {
			r.err = &LineError{Line: r.line, Err: fmt.Errorf("offset %d, length %d: past 2^63-1 bytes, the largest device", r.rec.Offset, r.rec.Length)}
			return false
		}
		return true
	}
	if err := r.s.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("longer than %d bytes: not a line of the log filter", maxLine)
		}
		r.err = &LineError{Line: r.line + 1, Err: err}
	}
	return false
}

// LineError is the error of a line of the log that does not read as a
// record of the log filter, or could not be read. Line counts from 1.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns Err.
func (e *LineError) Unwrap() error { return e.Err }

// Record returns the record Next read. It is overwritten by the next call.
func (r *Reader) Record() *Record { return &r.rec }

// Line is the number of the line of the last record read.
func (r *Reader) Line() int { return r.line }

// Err returns the error that stopped Next, or nil at the end of the log.
func (r *Reader) Err() error { return r.err }

// Summary is what a first pass over a log finds out.
type Summary struct {
	Records     int64     // lines read (flushes and unknown operations included)
	First, Last time.Time // earliest and latest request time
	MaxEnd      uint64    // the end of the highest byte range
}

// Summarize reads a whole log and returns its summary.
func Summarize(r io.Reader) (Summary, error) {
	var s Summary
	lr := NewReader(r)
	for lr.Next() {
		rec := lr.Record()
		if s.Records == 0 || rec.Time.Before(s.First) {
			s.First = rec.Time
		}
		if s.Records == 0 || rec.Time.After(s.Last) {
			s.Last = rec.Time
		}
		s.Records++
		if rec.Class() != ClassFlush && rec.Class() != ClassNone {
			s.MaxEnd = max(s.MaxEnd, rec.Offset+rec.Length) // Next checked the sum
		}
	}
	return s, lr.Err()
}
