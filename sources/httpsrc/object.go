package httpsrc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/sources/internal/blockstore"
)

// Defaults of Options.
const (
	DefaultCacheSize   = 256 << 20
	DefaultBlockSize   = 256 << 10
	DefaultConnections = 4
	DefaultRunSize     = 8 << 20
	DefaultDeadline    = 30 * time.Second
	// MaxRedirects is how many redirects a request follows.
	MaxRedirects = 5
	// maxHeaderBytes bounds the headers of a response.
	maxHeaderBytes = 64 << 10
	firstDelay     = 100 * time.Millisecond
	maxDelay       = 2 * time.Second
)

// Options tune Stat and Open. The zero value picks the defaults.
type Options struct {
	// CacheSize bounds the memory of fetched blocks, in bytes, for a
	// Source without a Pool.
	CacheSize int64
	// Pool, when set, is what the Sources Open (and Named) opens share
	// with every other Source of the Pool: the memory of their caches
	// (instead of CacheSize each), and one HTTP client (made with the
	// Options of the first).
	Pool *Pool
	// BlockSize is the unit of fetching and caching, in bytes.
	BlockSize int64
	// Connections bounds the requests in flight at once, readahead
	// included.
	Connections int
	// RunSize bounds the requests of the readahead of a sequential
	// reader, in bytes (at least BlockSize): the blocks ahead are asked
	// for in requests that start at Connections blocks and double while
	// the reader follows them, up to RunSize.
	RunSize int64
	// Deadline bounds the time one block (or one Object.ReadAt, or Stat)
	// may take, retries included; past it the read fails with EIO.
	Deadline time.Duration
	// Pin, when not "", is the Object.Pin the object must still have (a
	// restart of a device): Stat refuses an object that changed.
	Pin string
	// CacheDir, when not "", keeps the fetched blocks in a file of this
	// directory too, within DiskCacheSize bytes (0: CacheSize), so that
	// they survive the process (see sources/internal/blockstore for the
	// file and the checks on the directory). When the server does not
	// answer Stat, a version of the object kept there is served.
	CacheDir      string
	DiskCacheSize int64
	// DiskBudget, when set, is shared with the device's other objects:
	// this object's file in CacheDir takes its room from it (within
	// DiskCacheSize too) and gives it back on Close.
	DiskBudget *DiskBudget
	// TLS configures https connections (nil: the system's roots).
	TLS *tls.Config
	// Logf receives the line that says the object was replaced; nil
	// discards it. It is called from the fetching goroutines.
	Logf func(format string, args ...any)
}

func (o Options) withDefaults() Options {
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Connections <= 0 {
		o.Connections = DefaultConnections
	}
	if o.RunSize <= 0 {
		o.RunSize = DefaultRunSize
	}
	if o.Deadline <= 0 {
		o.Deadline = DefaultDeadline
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// stall is how long a request may go without progress before it is
// dropped and tried again.
func (o Options) stall() time.Duration { return max(o.Deadline/4, 100*time.Millisecond) }

// ErrReplaced is the error of every read that needs the server after the
// object was found replaced (a 412 to If-Match, or another size).
var ErrReplaced = fmt.Errorf("httpsrc: the object was replaced on the server: %w", syscall.EIO)

// Object is an object on an HTTP(S) server as Stat found it: its URL, its
// size and its validator. Its methods are safe for concurrent use.
type Object struct {
	name   string // the URL as given
	url    string // the URL requests go to (after redirects)
	size   int64
	etag   string // strong ETag, or ""
	date   string // Last-Modified when there is no strong ETag, or ""
	opts   Options
	client *http.Client
	shared bool // client is the Pool's: Close leaves its connections
	warns  []string
	// diskTaken is the room o's file in CacheDir took from
	// Options.DiskBudget.
	diskTaken int64
	// fetcher, when not nil, fetches the bytes instead of client
	// (NewObject).
	fetcher Fetcher
	store   *blockstore.Store // nil: no CacheDir

	replaced  atomic.Bool
	closeOnce sync.Once
}

// CheckURL returns an error unless raw is an http or https URL with a host
// and without credentials. The error does not repeat a password.
func CheckURL(raw string) error {
	_, err := parseURL(raw)
	return err
}

func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("not a valid URL: %v", err)
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return nil, fmt.Errorf("%s: not an http or https URL", u.Redacted())
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s: credentials in the URL are refused: they would be kept in the device's state record and shown by nbdloop list (give a URL without user:password@)", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%s: no host in the URL", raw)
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// Stat asks the server for the object at raw (an http or https URL) and
// pins it. Errors are one line that names the URL.
func Stat(raw string, opts Options) (*Object, error) {
	u, err := parseURL(raw)
	if err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	o := &Object{name: raw, url: u.String(), opts: opts}
	if opts.Pool != nil {
		o.client, o.shared = opts.Pool.httpClient(opts), true
	} else {
		o.client = newClient(opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Deadline)
	defer cancel()
	if err := o.stat(ctx); err != nil {
		err = fmt.Errorf("%s: %w", raw, err)
		var off *offlineError
		if opts.CacheDir != "" && errors.As(err, &off) {
			return statCached(raw, o, err)
		}
		o.closeIdle()
		return nil, err
	}
	if opts.Pin != "" && o.Pin() != opts.Pin {
		o.closeIdle()
		return nil, fmt.Errorf("%s: the object changed on the server since it was attached (it was %s, it is %s now): not served (detach the device, and attach the URL again)", raw, opts.Pin, o.Pin())
	}
	if o.etag == "" && o.date == "" {
		o.warns = append(o.warns, "the server gives neither an ETag nor a Last-Modified date: a replaced object of the same size cannot be detected")
	}
	if err := o.openStore(); err != nil {
		o.closeIdle()
		return nil, fmt.Errorf("%s: %w", raw, err)
	}
	return o, nil
}

// newClient returns the client of one object: HTTP/1.1 with keep-alive,
// at most opts.Connections connections, no transparent decompression,
// redirects to http(s) only.
func newClient(opts Options) *http.Client {
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: opts.TLS}
	configureTransport(tr, opts)
	return &http.Client{Transport: tr, CheckRedirect: checkRedirect}
}

// configureTransport sets tr's connections and timeouts for opts (its
// defaults applied): HTTP/1.1 keep-alive to at most opts.Connections
// connections, no transparent decompression, bounded headers, and dial,
// TLS and header timeouts of a stall. It keeps tr's TLS configuration
// unless opts.TLS is set.
func configureTransport(tr *http.Transport, opts Options) {
	stall := opts.stall()
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	tr.DialContext = (&net.Dialer{Timeout: stall, KeepAlive: 30 * time.Second}).DialContext
	if opts.TLS != nil {
		tr.TLSClientConfig = opts.TLS
	}
	tr.TLSHandshakeTimeout = stall
	tr.ResponseHeaderTimeout = stall
	tr.MaxIdleConnsPerHost = opts.Connections
	tr.MaxConnsPerHost = opts.Connections
	tr.IdleConnTimeout = 90 * time.Second
	tr.DisableCompression = true
	tr.MaxResponseHeaderBytes = maxHeaderBytes
	tr.ForceAttemptHTTP2 = false
	tr.Protocols = protos
}

// redirectError is a redirect that is not followed; requests that meet
// one are not tried again.
type redirectError struct{ msg string }

func (e *redirectError) Error() string { return e.msg }

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > MaxRedirects {
		return &redirectError{fmt.Sprintf("more than %d redirects", MaxRedirects)}
	}
	if s := req.URL.Scheme; s != "http" && s != "https" {
		return &redirectError{fmt.Sprintf("a redirect to %s leads outside http and https", req.URL.Redacted())}
	}
	if req.URL.User != nil {
		return &redirectError{fmt.Sprintf("a redirect to %s has credentials in the URL", req.URL.Redacted())}
	}
	return nil
}

// transportError is the error of client.Do without the URL it repeats,
// and whether it may pass (not a redirect refused, not a certificate that
// is not trusted).
func transportError(err error) (error, bool) {
	var re *redirectError
	if errors.As(err, &re) {
		return re, false
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return ce, false
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err, true
	}
	return err, true
}

// stat finds the size, the validator and the final URL: a HEAD first; a
// GET of the first byte when HEAD is refused, gives no size, or does not
// say that ranges are served.
func (o *Object) stat(ctx context.Context) error {
	var head *http.Response
	err := o.retry(ctx, func(ctx context.Context) (bool, error) {
		resp, err := o.do(ctx, http.MethodHead, "")
		if err != nil {
			err, again := transportError(err)
			return again, err
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return true, statusError(resp)
		}
		head = resp
		return false, nil
	})
	if err != nil {
		return err
	}
	if head.StatusCode/100 == 2 && head.ContentLength > 0 && head.Header.Get("Accept-Ranges") == "bytes" {
		o.url = head.Request.URL.String()
		o.size = head.ContentLength
		o.validators(head.Header)
		return nil
	}
	return o.retry(ctx, func(ctx context.Context) (bool, error) { return o.statGET(ctx) })
}

// statGET asks for the first byte: a 206 gives the size and the
// validator, a 200 means the server does not serve ranges.
func (o *Object) statGET(ctx context.Context) (retry bool, err error) {
	resp, err := o.do(ctx, http.MethodGet, "bytes=0-0")
	if err != nil {
		err, again := transportError(err)
		return again, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK && resp.ContentLength == 0:
		return false, errors.New("the object is empty: no bytes to serve")
	case resp.StatusCode == http.StatusOK:
		return false, errors.New("the server does not serve byte ranges (it answered a range request with the whole object): download the image and attach the file")
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return false, errors.New("the object is empty: no bytes to serve")
	case resp.StatusCode >= 500:
		return true, statusError(resp)
	case resp.StatusCode != http.StatusPartialContent:
		return false, statusError(resp)
	}
	first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return false, err
	}
	if first != 0 || last != 0 {
		return false, fmt.Errorf("asked for byte 0, the server sent bytes %d-%d", first, last)
	}
	var one [2]byte
	if n, _ := io.ReadFull(resp.Body, one[:]); n != 1 {
		return false, fmt.Errorf("asked for byte 0, the server sent %d bytes", n)
	}
	o.url = resp.Request.URL.String()
	o.size = total
	o.validators(resp.Header)
	return false, nil
}

// validators keeps the strong ETag of h, else its Last-Modified date.
func (o *Object) validators(h http.Header) {
	if e := h.Get("ETag"); e != "" && !strings.HasPrefix(e, "W/") && len(e) >= 2 && e[0] == '"' && e[len(e)-1] == '"' {
		o.etag = e
		return
	}
	if d := h.Get("Last-Modified"); d != "" {
		if _, err := http.ParseTime(d); err == nil {
			o.date = d
		}
	}
}

// parseContentRange parses "bytes FIRST-LAST/TOTAL" with a known total.
func parseContentRange(h string) (first, last, total int64, err error) {
	bad := fmt.Errorf("the server sent Content-Range %.80q, not bytes FIRST-LAST/SIZE", h)
	rng, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	span, tot, ok := strings.Cut(rng, "/")
	a, b, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return 0, 0, 0, bad
	}
	var e1, e2, e3 error
	first, e1 = strconv.ParseInt(a, 10, 64)
	last, e2 = strconv.ParseInt(b, 10, 64)
	total, e3 = strconv.ParseInt(tot, 10, 64)
	if e1 != nil || e2 != nil || e3 != nil || first < 0 || last < first || total <= last {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// do sends one request for the object; rng is the Range header ("": none).
// Range requests after Stat carry the validator.
func (o *Object) do(ctx context.Context, method, rng string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, o.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "nbdloop")
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	if o.size > 0 {
		switch {
		case o.etag != "":
			req.Header.Set("If-Match", o.etag)
		case o.date != "":
			req.Header.Set("If-Unmodified-Since", o.date)
		}
	}
	return o.client.Do(req)
}

func statusError(resp *http.Response) error {
	return fmt.Errorf("the server answered %s", resp.Status)
}

// retry calls try until it succeeds, or fails with retry false, or ctx
// ends, pausing between tries (firstDelay, doubling up to maxDelay). It
// returns the last error.
func (o *Object) retry(ctx context.Context, try func(ctx context.Context) (retry bool, err error)) error {
	delay := firstDelay
	for {
		again, err := try(ctx)
		if err == nil || !again {
			return err
		}
		if ctx.Err() != nil {
			return &offlineError{fmt.Errorf("%v (gave up after %v)", err, o.opts.Deadline)}
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return &offlineError{fmt.Errorf("%v (gave up after %v)", err, o.opts.Deadline)}
		}
		delay = min(delay*2, maxDelay)
	}
}

// Size is the object's size in bytes.
func (o *Object) Size() int64 { return o.size }

// Name is the URL as given to Stat.
func (o *Object) Name() string { return o.name }

// Pin names the version of the object that is served: "etag:" and the
// ETag, "date:" and the Last-Modified date, or "size:" and the size when
// the server gives neither. Options.Pin takes it.
func (o *Object) Pin() string {
	switch {
	case o.etag != "":
		return "etag:" + o.etag
	case o.date != "":
		return "date:" + o.date
	}
	return "size:" + strconv.FormatInt(o.size, 10)
}

// Warnings are what attach should tell the user about the object, one
// line each.
func (o *Object) Warnings() []string { return o.warns }

// ReadAt reads the object's bytes at off with one range request (retried
// as a block is), without the cache. Reads past the end fail with io.EOF.
func (o *Object) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("httpsrc: negative offset %d: %w", off, syscall.EINVAL)
	}
	var eof error
	if int64(len(p)) > o.size-off {
		if off >= o.size {
			return 0, io.EOF
		}
		p, eof = p[:o.size-off], io.EOF
	}
	if o.store != nil {
		n, err := o.readBlocks(p, off)
		if err != nil {
			return n, err
		}
		return n, eof
	}
	r := o.reader(off, off+int64(len(p)))
	defer r.Close()
	n, err := io.ReadFull(r, p)
	if err != nil {
		return n, err
	}
	return n, eof
}

// Close closes the idle connections of the object's own client (not a
// Pool's) or its Fetcher, and the file of its blocks in Options.CacheDir.
func (o *Object) Close() {
	o.closeIdle()
	o.closeOnce.Do(func() {
		if o.fetcher != nil {
			o.fetcher.Close()
		}
		if o.store != nil {
			o.store.Close()
		}
		if o.diskTaken > 0 {
			o.opts.DiskBudget.give(o.diskTaken)
		}
	})
}

// closeIdle closes the idle connections of o's own client (a Pool's
// stays open for the Pool's other Sources).
func (o *Object) closeIdle() {
	if o.fetcher == nil && !o.shared {
		o.client.CloseIdleConnections()
	}
}

// replace records that the object was replaced, and logs it once.
func (o *Object) replace(why string) {
	if o.replaced.CompareAndSwap(false, true) {
		o.opts.Logf("%s: the object was replaced on the server (%s; served as %s): reads of bytes not cached fail with EIO (detach the device, and attach the URL again to serve the new object)", o.name, why, o.Pin())
	}
}
