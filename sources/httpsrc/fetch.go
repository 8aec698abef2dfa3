package httpsrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"time"
)

// rangeReader reads bytes [off, end) of the object: a range request,
// resumed from where it stopped when it fails in a way that may pass,
// until the deadline that starts when the reader is made (for a run of
// blocks: renewed as each block starts). Every error it returns wraps
// EIO.
type rangeReader struct {
	o        *Object
	ctx      context.Context // the deadline of a reader of one block
	cancel   context.CancelFunc
	off, end int64
	limit    time.Time // the deadline
	block    int64     // a run: the limit is renewed at each multiple of block

	body      io.ReadCloser
	got       int64              // bytes read from body
	stop      context.CancelFunc // ends the current request
	watchdog  *time.Timer        // calls stop when the body stalls
	delay     time.Duration      // the pause before the next try
	lastError error
	extra     [1]byte
}

func (o *Object) reader(off, end int64) *rangeReader {
	limit := time.Now().Add(o.opts.Deadline)
	ctx, cancel := context.WithDeadline(context.Background(), limit)
	return &rangeReader{o: o, ctx: ctx, cancel: cancel, off: off, end: end, limit: limit, delay: firstDelay}
}

// runReader is reader for a run of whole blocks, [off, end): one request
// whose deadline starts again at each block. A body that goes on
// trickling past a block's deadline fails the read.
func (o *Object) runReader(off, end int64) *rangeReader {
	ctx, cancel := context.WithCancel(context.Background())
	return &rangeReader{o: o, ctx: ctx, cancel: cancel, off: off, end: end,
		limit: time.Now().Add(o.opts.Deadline), block: o.opts.BlockSize, delay: firstDelay}
}

// errRetry marks errors that may pass.
type errRetry struct{ err error }

func (e errRetry) Error() string { return e.err.Error() }

func (r *rangeReader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.end {
			return 0, io.EOF
		}
		if r.body == nil {
			if err := r.request(); err != nil {
				var again errRetry
				if !errors.As(err, &again) {
					return 0, r.fail(err)
				}
				if err := r.pause(again.err); err != nil {
					return 0, err
				}
				continue
			}
		}
		q := p[:min(int64(len(p)), r.end-r.off)]
		n, err := r.body.Read(q)
		r.off += int64(n)
		r.got += int64(n)
		if n > 0 {
			r.watchdog.Reset(r.o.opts.stall())
			r.delay = firstDelay
			if r.block > 0 {
				if err := r.renew(int64(n)); err != nil {
					return n, err
				}
			}
		}
		if r.off == r.end {
			return n, r.finish()
		}
		if err == nil {
			if n > 0 {
				return n, nil
			}
			continue
		}
		progressed := r.got > 0
		r.closeBody()
		if err == io.EOF {
			err = fmt.Errorf("the body ended %d bytes short", r.end-r.off)
		}
		r.lastError = err
		if n > 0 {
			return n, nil // the next Read asks for the rest
		}
		if progressed {
			continue // ask for the rest at once
		}
		if err := r.pause(err); err != nil {
			return 0, err
		}
	}
}

// renew starts the deadline again when the n bytes just read crossed
// into a block, and fails the read when they came past it.
func (r *rangeReader) renew(n int64) error {
	now := time.Now()
	if (r.off-n)/r.block != r.off/r.block {
		r.limit = now.Add(r.o.opts.Deadline)
		return nil
	}
	if r.off != r.end && now.After(r.limit) {
		return r.fail(fmt.Errorf("the body came too slowly (gave up after %v)", r.o.opts.Deadline))
	}
	return nil
}

// expired reports whether the deadline has passed.
func (r *rangeReader) expired() bool { return r.ctx.Err() != nil || time.Now().After(r.limit) }

// finish checks that the body ends with the range, and closes it so that
// its connection is used again.
func (r *rangeReader) finish() error {
	n, _ := r.body.Read(r.extra[:])
	r.closeBody()
	if n > 0 {
		return r.fail(errors.New("the body is longer than the range asked for"))
	}
	return nil
}

// pause waits before the next try, or returns the read's error once the
// deadline is past.
func (r *rangeReader) pause(err error) error {
	if r.expired() {
		if r.lastError != nil && errors.Is(err, context.DeadlineExceeded) {
			err = r.lastError
		}
		return r.fail(fmt.Errorf("%v (gave up after %v)", err, r.o.opts.Deadline))
	}
	r.lastError = err
	t := time.NewTimer(min(r.delay, time.Until(r.limit)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.ctx.Done():
		return r.fail(fmt.Errorf("%v (gave up after %v)", err, r.o.opts.Deadline))
	}
	r.delay = min(r.delay*2, maxDelay)
	return nil
}

// request sends the range request for [off, end) and checks its answer;
// errors that may pass come as errRetry.
func (r *rangeReader) request() error {
	if r.o.replaced.Load() {
		return ErrReplaced
	}
	ctx, stop := context.WithCancel(r.ctx)
	r.watchdog = time.AfterFunc(r.o.opts.stall(), stop)
	r.stop = stop
	body, err := r.o.fetch(ctx, r.off, r.end)
	if err != nil {
		r.stopRequest()
		return err // past the deadline, pause reports an errRetry
	}
	r.body, r.got = body, 0
	return nil
}

// fetchHTTP sends the range request for [off, end) of the object on its
// HTTP server and checks the answer.
func (o *Object) fetchHTTP(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	resp, err := o.do(ctx, http.MethodGet, "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(end-1, 10))
	if err != nil {
		if err, again := transportError(err); !again {
			return nil, err
		}
		return nil, errRetry{err}
	}
	if err := o.check(resp, off, end); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp.Body, nil
}

// check accepts a 206 for exactly [off, end) of an object of the size
// pinned; a 412 or 416, or another size, means the object was replaced.
func (o *Object) check(resp *http.Response, off, end int64) error {
	switch {
	case resp.StatusCode == http.StatusPreconditionFailed:
		o.replace("the server answered " + resp.Status + " to If-Match")
		return ErrReplaced
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		o.replace("the server answered " + resp.Status + ": the object is smaller now")
		return ErrReplaced
	case resp.StatusCode >= 500:
		return errRetry{statusError(resp)}
	case resp.StatusCode == http.StatusOK:
		return errors.New("the server answered a range request with the whole object: it no longer serves byte ranges")
	case resp.StatusCode != http.StatusPartialContent:
		return statusError(resp)
	}
	return o.checkRange(resp.Header.Get("Content-Range"), resp.ContentLength, off, end)
}

// checkRange accepts the Content-Range and the announced length (-1:
// unknown) of an answer for exactly [off, end) of an object of the size
// pinned; another size means the object was replaced.
func (o *Object) checkRange(contentRange string, length, off, end int64) error {
	first, last, total, err := parseContentRange(contentRange)
	if err != nil {
		return err
	}
	if total != o.size {
		o.replace(fmt.Sprintf("its size is %d bytes now, not %d", total, o.size))
		return ErrReplaced
	}
	if first != off || last != end-1 {
		return fmt.Errorf("asked for bytes %d-%d, the server sent bytes %d-%d", off, end-1, first, last)
	}
	if length >= 0 && length != end-off {
		return fmt.Errorf("asked for %d bytes, the server announced a body of %d", end-off, length)
	}
	return nil
}

// fail turns err into the read's error: it names the URL and the range
// and wraps EIO.
func (r *rangeReader) fail(err error) error {
	r.closeBody()
	if errors.Is(err, ErrReplaced) {
		return fmt.Errorf("%s: bytes %d-%d: %w", r.o.name, r.off, r.end-1, ErrReplaced)
	}
	return fmt.Errorf("httpsrc: %s: bytes %d-%d: %v: %w", r.o.name, r.off, r.end-1, err, syscall.EIO)
}

func (r *rangeReader) stopRequest() {
	if r.watchdog != nil {
		r.watchdog.Stop()
		r.stop()
		r.watchdog, r.stop = nil, nil
	}
}

func (r *rangeReader) closeBody() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.stopRequest()
}

// Close ends the request in flight, if any.
func (r *rangeReader) Close() error {
	r.closeBody()
	r.cancel()
	return nil
}
