package httpsrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// Fetcher sends the requests for byte ranges of an object kept where plain
// HTTP range requests do not reach it (an S3 bucket, through its SDK:
// sources/s3src). NewObject makes it an Object, served as a URL's object
// is: the same cache, parallel fetches, readahead, retries, deadline and
// pin.
type Fetcher interface {
	// Fetch starts the request for bytes [off, end) of the object as it
	// was pinned and returns the answer, whose body must hold exactly
	// those bytes (one that ends early is asked again for the rest).
	// Ending ctx ends the request, body included. Errors: Transient(err)
	// for a failure that may pass (a 5xx, a timeout, a reset connection);
	// Replaced(why) when the store says that the object is no longer the
	// one pinned; any other fails the read at once.
	Fetch(ctx context.Context, off, end int64) (Answer, error)
	// Close closes the fetcher's idle connections.
	Close()
}

// Answer is a Fetcher's answer to one range request.
type Answer struct {
	Body io.ReadCloser
	// ContentRange is the answer's "bytes FIRST-LAST/SIZE".
	ContentRange string
	// Length is the announced length of Body, -1 when unknown.
	Length int64
	// ETag is the object's ETag as the answer gives it, "" for none.
	ETag string
}

// Transient marks err, returned by Fetcher.Fetch, as a failure that may
// pass: the request is tried again after a pause, within the deadline.
func Transient(err error) error { return errRetry{err} }

// replacedError is a Fetcher's word that the object was replaced.
type replacedError struct{ why string }

func (e replacedError) Error() string { return "the object was replaced: " + e.why }

// Replaced is the error a Fetcher returns when the store says that the
// object is no longer the one pinned; why says how it knows.
func Replaced(why string) error { return replacedError{why} }

// NewObject returns the Object named name (a URL, such as s3://b/k) of
// size bytes whose strong ETag (quoted) is etag, or "" when the store gives
// none, and whose bytes f fetches. It fails as Stat does for an empty
// object and for one that is not opts.Pin, and closes f then. The Object's
// Close closes f. Options.CacheDir keeps its blocks on disk as Stat's.
func NewObject(name string, size int64, etag string, f Fetcher, opts Options) (*Object, error) {
	o := &Object{name: name, url: name, size: size, etag: etag, opts: opts.withDefaults(), fetcher: f}
	if size <= 0 {
		f.Close()
		return nil, fmt.Errorf("%s: the object is empty: no bytes to serve", name)
	}
	if opts.Pin != "" && o.Pin() != opts.Pin {
		f.Close()
		return nil, fmt.Errorf("%s: the object changed in the store since it was attached (it was %s, it is %s now): not served (detach the device, and attach it again)", name, opts.Pin, o.Pin())
	}
	if etag == "" {
		o.warns = append(o.warns, "the store gives no ETag: a replaced object of the same size cannot be detected")
	}
	if err := o.openStore(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return o, nil
}

// ConfigureTransport sets tr as the Object's own transport is set for
// opts (its defaults applied): HTTP/1.1 keep-alive to at most
// opts.Connections connections, no transparent decompression, and
// timeouts that drop a stalled connection well within opts.Deadline. A
// Fetcher built on an SDK sends through such a transport; tr keeps its TLS
// configuration (an SDK's CA bundle) unless opts.TLS is set.
func ConfigureTransport(tr *http.Transport, opts Options) {
	configureTransport(tr, opts.withDefaults())
}

// fetch starts the request for [off, end): through the Fetcher, or as an
// HTTP range request.
func (o *Object) fetch(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	if o.fetcher == nil {
		return o.fetchHTTP(ctx, off, end)
	}
	a, err := o.fetcher.Fetch(ctx, off, end)
	var re replacedError
	if errors.As(err, &re) {
		o.replace(re.why)
		return nil, ErrReplaced
	}
	if err != nil {
		return nil, err
	}
	if err := o.checkAnswer(a, off, end); err != nil {
		a.Body.Close()
		return nil, err
	}
	return a.Body, nil
}

// checkAnswer accepts a Fetcher's answer for exactly [off, end) of the
// object pinned.
func (o *Object) checkAnswer(a Answer, off, end int64) error {
	if a.ETag != "" && o.etag != "" && a.ETag != o.etag {
		o.replace("the store sent ETag " + strconv.Quote(a.ETag) + " for " + o.etag)
		return ErrReplaced
	}
	return o.checkRange(a.ContentRange, a.Length, off, end)
}

// ParseContentRange parses a Content-Range of "bytes FIRST-LAST/SIZE" with
// a known size, as the range requests' answers are checked.
func ParseContentRange(h string) (first, last, total int64, err error) {
	return parseContentRange(h)
}
