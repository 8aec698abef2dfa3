package filters

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

var logDef = &Def{
	Name:    "log",
	Summary: "record every request in a file, one JSON object a line",
	Doc: "Writes one JSON object per line for each request the server answers, with the " +
		"fields time, conn, op, offset, length, flags, latency_us and error, in that order, " +
		`e.g. {"time":"2026-11-26T14:39:59.123456789Z", "conn":0, "op":"write", ` +
		`"offset":1024, "length":4096, "flags":"fua", "latency_us":37.5, "error":""} ` +
		"(without the spaces). " +
		"time is when the request arrived (UTC), op is read, write, flush, trim or zero, " +
		"flags is empty or fua, nohole or fua,nohole, latency_us runs until the reply was " +
		"queued (waiting for a worker included), error is empty or the NBD error (EIO, " +
		"ENOSPC, ...). Lines are buffered and written at least every second and at detach; " +
		"the filter records the requests as the kernel sent them, wherever it is in the " +
		"chain. The file is appended to, never truncated (a restarted server and a new " +
		"attach add their lines after the old ones); it is created, mode 0600, with the first " +
		"line, so an attach that fails leaves nothing behind; a symbolic link or anything but " +
		"a regular file at PATH is refused. " +
		"Example: --filter log:file=/tmp/mkfs.jsonl",
	Options: []Option{
		{Key: "file", Value: "PATH", Require: true, kind: pathKind, Help: "the log file, appended to (created 0600 with the first line)"},
		{Key: "append", Value: "BOOL", Default: "true", kind: boolKind, Help: "accepted for old command lines: the file is always appended to"},
	},
	open: func(next sources.Source, a args, env Env) (sources.Source, error) {
		return NewLog(next, LogOptions{File: a.str("file")}, env)
	},
}

// LogOptions configure a Log filter.
type LogOptions struct {
	// File is appended to; a missing file is created (0600) when the
	// first line is written. A symbolic link, or anything but a regular
	// file, is refused.
	File string
}

// logFlushEvery is how often buffered log lines are written out.
const logFlushEvery = time.Second

// Log records every request the NBD server serves in a file, as JSON lines
// (JSON Lines, one object per line, UTF-8, "\n" after each):
//
//	{"time":"2026-11-26T14:39:59.123456789Z","conn":0,"op":"write","offset":1024,"length":4096,"flags":"fua","latency_us":37.5,"error":""}
//
// The fields, always all present and in this order:
//
//   - time: when the server read the request, RFC 3339 with nanoseconds, UTC
//   - conn: the connection it came on, 0..connections-1
//   - op: read, write, flush, trim or zero (NBD_CMD_WRITE_ZEROES)
//   - offset, length: the byte range, as sent (0 and 0 for a flush)
//   - flags: "", "fua", "nohole" or "fua,nohole"
//   - latency_us: microseconds (fractional, to the nanosecond) from time
//     until the reply was queued, time waiting for a worker included
//   - error: "" for success, else the NBD error name (EPERM, EIO, ENOMEM,
//     EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN, or E<number>)
//
// Lines are in the order replies were queued, so time is not monotonic
// across lines. Readers should ignore fields they do not know: later
// versions may add some at the end.
//
// Log is an Observer: it sees the requests as the server received them
// from the kernel, wherever it is in the filter chain, and otherwise passes
// every call to next. Lines are formatted into a 256 KiB buffer under a
// lock, without allocating, and written out every second and at Close; a
// write error is logged once and later lines are dropped.
//
// Caps are next's, unchanged.
type Log struct {
	next sources.Source
	caps sources.Caps
	env  Env

	mu      sync.Mutex
	f       *logFile
	w       *bufio.Writer
	line    []byte
	failed  bool
	stop    chan struct{}
	done    chan struct{}
	stopped bool
}

// NewLog opens the log file and wraps next. Closing the filter flushes and
// closes the file and closes next.
func NewLog(next sources.Source, opts LogOptions, env Env) (*Log, error) {
	f, err := openLogFile(opts.File)
	if err != nil {
		return nil, fmt.Errorf("log filter: %w", err)
	}
	c := next.Caps()
	l := &Log{
		next: next,
		caps: sources.Caps{
			ReadOnly: c.ReadOnly, Flush: c.Flush, Trim: c.Trim, Zero: c.Zero,
			Parallel: c.Parallel, Rotational: c.Rotational,
		},
		env:  env,
		f:    f,
		w:    bufio.NewWriterSize(f, 256<<10),
		line: make([]byte, 0, 256),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go l.flusher()
	return l, nil
}

func (l *Log) flusher() {
	defer close(l.done)
	t := time.NewTicker(logFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			l.flushLocked()
			l.mu.Unlock()
		}
	}
}

func (l *Log) flushLocked() {
	if l.failed || l.w == nil {
		return
	}
	if err := l.w.Flush(); err != nil {
		l.failed = true
		l.env.logf("log filter: %s: %v; dropping further lines", l.f.path, err)
	}
}

// Observe appends r's line to the buffer.
func (l *Log) Observe(r request.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed || l.w == nil {
		return
	}
	l.line = appendLogLine(l.line[:0], r)
	if _, err := l.w.Write(l.line); err != nil {
		l.failed = true
		l.env.logf("log filter: %s: %v; dropping further lines", l.f.path, err)
	}
}

// appendLogLine formats r as one JSON line.
func appendLogLine(b []byte, r request.Request) []byte {
	b = append(b, `{"time":"`...)
	b = r.Start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","conn":`...)
	b = strconv.AppendInt(b, int64(r.Conn), 10)
	b = append(b, `,"op":"`...)
	b, _ = r.Op.AppendText(b)
	b = append(b, `","offset":`...)
	b = strconv.AppendUint(b, r.Offset, 10)
	b = append(b, `,"length":`...)
	b = strconv.AppendUint(b, r.Length, 10)
	b = append(b, `,"flags":"`...)
	b, _ = (r.Flags & request.KnownFlags).AppendText(b)
	b = append(b, `","latency_us":`...)
	b = strconv.AppendFloat(b, float64(r.Latency)/1e3, 'f', -1, 64)
	b = append(b, `,"error":"`...)
	if r.Error != 0 {
		b = appendErrnoName(b, r.Error)
	}
	b = append(b, "\"}\n"...)
	return b
}

func appendErrnoName(b []byte, code uint32) []byte {
	for _, e := range errnos {
		if uint32(e.errno) == code {
			return append(b, e.name...)
		}
	}
	b = append(b, 'E')
	return strconv.AppendUint(b, uint64(code), 10)
}

// Size returns next's size.
func (l *Log) Size() int64 { return l.next.Size() }

// Caps returns next's capabilities.
func (l *Log) Caps() sources.Caps { return l.caps }

// ReadAt reads from next.
func (l *Log) ReadAt(p []byte, off int64) (int, error) { return l.next.ReadAt(p, off) }

// WriteAt writes to next.
func (l *Log) WriteAt(p []byte, off int64) (int, error) { return l.next.WriteAt(p, off) }

// Flush flushes next. (The log file is written out on its own schedule.)
func (l *Log) Flush() error { return l.next.Flush() }

// Trim trims next.
func (l *Log) Trim(off, length int64) error { return l.next.Trim(off, length) }

// Zero zeros next.
func (l *Log) Zero(off, length int64, mayTrim bool) error { return l.next.Zero(off, length, mayTrim) }

// Close writes out the buffered lines, closes the log file and closes next.
func (l *Log) Close() error { return closeChain(l, l.next) }

func (l *Log) release() error {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return nil
	}
	l.stopped = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	err := l.f.Close()
	l.w = nil
	if l.failed {
		return errors.Join(err, fmt.Errorf("log filter: %s: lines were lost", l.f.path))
	}
	return err
}

// Extents passes next's extents on: the filter does not change what the
// bytes are.
func (l *Log) Extents(off, length int64, fn func(sources.Extent) bool) error {
	return sources.Extents(l.next, off, length, fn)
}
