package httpsrc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// direct serves the large reads of an object on a plain http server that
// the cache has none of, straight from the server's answer: the body of
// the range request is spliced from the connection into a pipe, and from
// the pipe (by the NBD server) into the device's socket, so its bytes are
// never copied through the process's memory, nor kept (see Source.PipeRead).
//
// It has connections of its own, at most Options.Connections, besides the
// client's; only an answer it fully understands is served so (a 206 for
// exactly the range, with its Content-Length and the pinned ETag, no
// transfer coding): for any other, a failed or slow connection, the read
// is served through the cache, whose requests retry and tell a replaced
// object from a failure.
type direct struct {
	o        *Object
	addr     string // host:port
	prefix   []byte // the request up to its Range header
	min, max int64  // the sizes of the reads it serves
	dial     net.Dialer
	slots    chan struct{} // one per request in flight

	mu     sync.Mutex
	idle   []*directConn
	free   []*pipes // empty, for reuse
	closed bool

	fails atomic.Int32 // unusable answers in a row; at maxDirectFails it serves no more
	// pause is how long the path stands aside after a connection failed;
	// until (Unix nanoseconds) is when it may be used again.
	pause time.Duration
	until atomic.Int64
	reads atomic.Int64 // reads served
}

const (
	// maxDirectHead bounds the head of an answer (status line and
	// headers).
	maxDirectHead = 16 << 10
	// maxDirectFails turns the path off for the object's life: a server
	// whose answers it cannot use is not asked twice for every read.
	maxDirectFails = 8
	// directPause is how long the path stands aside after a connection
	// failed (refused, reset, stalled, cut short): the cache's requests,
	// which retry, serve the reads meanwhile.
	directPause  = time.Second
	maxFreePipes = 16
)

// newDirect returns the direct path of o, or nil when o cannot have one:
// another store (a Fetcher), blocks kept on disk (CacheDir, which only the
// cache fills), https (no splice from a TLS session), a proxy, or pipes
// too small for reads larger than two blocks.
func newDirect(o *Object) *direct {
	if o.fetcher != nil || o.store != nil {
		return nil
	}
	u, err := url.Parse(o.url)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Host == "" {
		return nil
	}
	if p, err := http.ProxyFromEnvironment(&http.Request{URL: u}); err != nil || p != nil {
		return nil
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	d := &direct{o: o, addr: net.JoinHostPort(u.Hostname(), port), min: 2 * o.opts.BlockSize, pause: directPause,
		dial: net.Dialer{Timeout: o.opts.stall(), KeepAlive: 30 * time.Second}, slots: make(chan struct{}, o.opts.Connections)}
	// Half of what the pipes hold, for packets that leave pages partly
	// empty.
	d.max = min(int64(d.pipeCapacity()*maxPipes/2), MaxDirectRead)
	if d.max < d.min {
		return nil
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: nbdloop\r\n"
	switch {
	case o.etag != "":
		req += "If-Match: " + o.etag + "\r\n"
	case o.date != "":
		req += "If-Unmodified-Since: " + o.date + "\r\n"
	}
	d.prefix = []byte(req + "Range: bytes=")
	return d
}

// MaxDirectRead is the largest read served straight from the server.
const MaxDirectRead = 1 << 20

// takes reports whether reads of n bytes are the direct path's now: within
// its sizes, the path not turned off, nor standing aside.
func (d *direct) takes(n int64) bool {
	return n >= d.min && n <= d.max && d.fails.Load() < maxDirectFails && time.Now().UnixNano() >= d.until.Load()
}

// unusable is the error of an answer the path cannot serve: the server
// answers so, and may go on doing so.
type unusable struct{ error }

// read puts the n bytes at off into pipes, and returns their read ends
// (in order) and the call that gives them back; ok is false when that
// failed.
func (d *direct) read(off, n int64) (fds []int, release func(), ok bool) {
	d.slots <- struct{}{}
	defer func() { <-d.slots }()
	p, err := d.getPipes()
	if err != nil {
		return nil, nil, false
	}
	c, reused, err := d.getConn()
	if err == nil {
		err = c.get(d, p, off, n)
		if err != nil && reused && c.fresh {
			// An idle connection the server had closed: once more, on a
			// new one.
			c.close()
			if c, err = d.newConn(); err == nil {
				err = c.get(d, p, off, n)
			}
		}
	}
	if err != nil {
		if c != nil {
			c.close()
		}
		p.put()
		var bad unusable
		if !errors.As(err, &bad) {
			d.until.Store(time.Now().Add(d.pause).UnixNano())
		} else if d.fails.Add(1) == maxDirectFails {
			d.o.opts.Logf("%s: large reads go through the cache from now on: %v", d.o.name, err)
		}
		return nil, nil, false
	}
	d.putConn(c)
	d.fails.Store(0)
	d.reads.Add(1)
	return p.fds, p.release, true
}

// close closes the idle connections and the empty pipes; those in use
// are closed when given back.
func (d *direct) close() {
	d.mu.Lock()
	d.closed = true
	idle, free := d.idle, d.free
	d.idle, d.free = nil, nil
	d.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
	for _, p := range free {
		p.close()
	}
}

// pipes hold the body of one answer: as many pipes as its packets take (a
// pipe holds a page or less of each), made as they are needed, at most
// maxPipes.
type pipes struct {
	d     *direct
	ends  [maxPipes][2]int // read and write ends
	made  int
	cur   int   // the pipe being filled
	fds   []int // the read ends of pipes 0..cur, for the server
	array [maxPipes]int
	// release is put, bound once.
	release func()
}

// pipeSize is the capacity asked of each pipe: /proc/sys/fs/pipe-max-size
// by default, beyond which a pipe takes CAP_SYS_RESOURCE.
const pipeSize = 1 << 20

// maxPipes bounds the pipes of one answer: 1 MiB through the loopback
// takes two pipes of pipeSize, through a network of 1500-byte frames
// three.
const maxPipes = 4

// pipeCapacity returns the capacity of the pipes d makes, making one to
// see; a non-positive one when none can be made.
func (d *direct) pipeCapacity() int {
	p := &pipes{d: d}
	defer p.close()
	if !p.grow() {
		return 0
	}
	size, err := unix.FcntlInt(uintptr(p.ends[0][1]), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return 0
	}
	return size
}

// grow makes pipe number p.made; false when it cannot.
func (p *pipes) grow() bool {
	if p.made == maxPipes {
		return false
	}
	e := &p.ends[p.made]
	if err := unix.Pipe2(e[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return false
	}
	unix.FcntlInt(uintptr(e[1]), unix.F_SETPIPE_SZ, pipeSize) // else the default (64 KiB)
	p.made++
	return true
}

// next moves on to the next pipe; false when there is none.
func (p *pipes) next() bool {
	if p.cur+1 == p.made && !p.grow() {
		return false
	}
	p.cur++
	p.fds = append(p.fds, p.ends[p.cur][0])
	return true
}

func (d *direct) getPipes() (*pipes, error) {
	d.mu.Lock()
	if k := len(d.free); k > 0 {
		p := d.free[k-1]
		d.free = d.free[:k-1]
		d.mu.Unlock()
		return p, nil
	}
	d.mu.Unlock()
	p := &pipes{d: d}
	p.release = p.put
	if !p.grow() {
		return nil, errors.New("no pipe")
	}
	p.fds = append(p.array[:0], p.ends[0][0])
	return p, nil
}

// put gives p back: kept for reuse when its pipes are empty, closed
// otherwise.
func (p *pipes) put() {
	d := p.d
	empty := true
	for i := range p.made {
		if held, err := unix.IoctlGetInt(p.ends[i][0], unix.TIOCINQ); err != nil || held != 0 { // TIOCINQ is FIONREAD
			empty = false
		}
	}
	if empty {
		p.cur, p.fds = 0, p.fds[:1]
		d.mu.Lock()
		if !d.closed && len(d.free) < maxFreePipes {
			d.free = append(d.free, p)
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
	p.close()
}

func (p *pipes) close() {
	for i := range p.made {
		unix.Close(p.ends[i][0])
		unix.Close(p.ends[i][1])
	}
	p.made = 0
}

// directConn is one connection of the direct path.
type directConn struct {
	c    *net.TCPConn
	rc   syscall.RawConn
	req  []byte // the request
	buf  []byte // the head of the answer, and what came with it
	want []byte // the Content-Range and Content-Length expected
	// fresh: nothing of the answer has come yet.
	fresh bool
	keep  bool // the server keeps the connection open after the answer

	// The splice from the connection into the pipe, on one goroutine.
	p     *pipes
	left  int
	eof   bool
	full  bool
	errno syscall.Errno
	call  func(fd uintptr) bool
}

func (d *direct) getConn() (c *directConn, reused bool, err error) {
	d.mu.Lock()
	if k := len(d.idle); k > 0 {
		c = d.idle[k-1]
		d.idle = d.idle[:k-1]
		d.mu.Unlock()
		return c, true, nil
	}
	d.mu.Unlock()
	c, err = d.newConn()
	return c, false, err
}

func (d *direct) newConn() (*directConn, error) {
	nc, err := d.dial.Dial("tcp", d.addr)
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, errors.New("not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		tc.Close()
		return nil, err
	}
	c := &directConn{c: tc, rc: rc, buf: make([]byte, 0, maxDirectHead), want: make([]byte, 0, 128)}
	c.call = c.splice
	return c, nil
}

func (d *direct) putConn(c *directConn) {
	if c.keep {
		d.mu.Lock()
		if !d.closed && len(d.idle) < cap(d.slots) {
			d.idle = append(d.idle, c)
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
	c.close()
}

func (c *directConn) close() { c.c.Close() }

// get asks for bytes [off, off+n) of the object and puts the answer's
// body into p, which is empty. On an error the connection cannot be used
// again.
func (c *directConn) get(d *direct, p *pipes, off, n int64) error {
	c.fresh = true
	c.c.SetDeadline(time.Now().Add(d.o.opts.stall()))
	end := off + n - 1
	c.req = append(c.req[:0], d.prefix...)
	c.req = strconv.AppendInt(c.req, off, 10)
	c.req = append(c.req, '-')
	c.req = strconv.AppendInt(c.req, end, 10)
	c.req = append(c.req, "\r\n\r\n"...)
	if _, err := c.c.Write(c.req); err != nil {
		return err
	}
	// The answer's head, and what came of the body with it.
	c.buf = c.buf[:0]
	head := -1
	for head < 0 {
		if len(c.buf) == cap(c.buf) {
			return unusable{fmt.Errorf("the head of the answer is longer than %d bytes", maxDirectHead)}
		}
		k, err := c.c.Read(c.buf[len(c.buf):cap(c.buf)])
		if k > 0 {
			c.fresh = false
		}
		c.buf = c.buf[:len(c.buf)+k]
		if i := bytes.Index(c.buf, []byte(endOfHead)); i >= 0 {
			head = i + len(endOfHead)
		} else if err != nil {
			return err
		}
	}
	// want: "bytes OFF-END/SIZE", then the length.
	c.want = append(c.want[:0], "bytes "...)
	c.want = strconv.AppendInt(c.want, off, 10)
	c.want = append(c.want, '-')
	c.want = strconv.AppendInt(c.want, end, 10)
	c.want = append(c.want, '/')
	c.want = strconv.AppendInt(c.want, d.o.size, 10)
	k := len(c.want)
	c.want = strconv.AppendInt(c.want, n, 10)
	keep, err := checkDirectHead(c.buf[:head], c.want[:k], c.want[k:], d.o.etag)
	if err != nil {
		return unusable{err}
	}
	c.keep = keep
	body := c.buf[head:]
	if int64(len(body)) > n {
		return unusable{errors.New("the body is longer than the range asked for")}
	}
	if len(body) > 0 {
		if w, err := unix.Write(p.ends[0][1], body); err != nil || w != len(body) {
			return fmt.Errorf("writing into a pipe: %d of %d bytes: %v", w, len(body), err)
		}
	}
	c.p, c.left, c.eof, c.full, c.errno = p, int(n)-len(body), false, false, 0
	if c.left == 0 {
		return nil
	}
	if err := c.rc.Read(c.call); err != nil {
		return err // the deadline, or closed
	}
	switch {
	case c.errno != 0:
		return c.errno
	case c.eof:
		return fmt.Errorf("the body ended %d bytes short", c.left)
	case c.full:
		return unusable{fmt.Errorf("%d pipes are full: the answer came in packets too small", maxPipes)}
	}
	return nil
}

const endOfHead = "\r\n\r\n"

// splice moves the body from the connection into the pipe until c.left
// bytes have come; false makes the poller wait for the connection.
func (c *directConn) splice(fd uintptr) bool {
	again := 0
	for c.left > 0 {
		r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, fd, 0, uintptr(c.p.ends[c.p.cur][1]), 0, uintptr(c.left), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			// Nothing to read, or the pipe is full: then the socket still
			// holds bytes (asked twice, for the bytes that came between).
			if q, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err != nil || q == 0 {
				return false
			}
			if again++; again < 2 {
				continue
			}
			if !c.p.next() {
				c.full = true
				return true
			}
			again = 0
			continue
		case e != 0:
			c.errno = e
			return true
		case r == 0:
			c.eof = true
			return true
		}
		again = 0
		c.left -= int(r)
	}
	return true
}

// checkDirectHead accepts the head of an answer (status line, headers,
// the blank line) when it is a 206 whose Content-Range is exactly rng and
// Content-Length exactly length, with no transfer or content coding, and
// no ETag other than etag (when etag is not ""); keep reports whether the
// connection stays open after the body. Anything it does not know to be
// right is an error: the read then goes the cache's way.
func checkDirectHead(head, rng, length []byte, etag string) (keep bool, err error) {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 206 ")) {
		return false, fmt.Errorf("the server answered %q", truncate(line))
	}
	keep = true
	var gotRange, gotLength bool
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(line) == 0 {
			break // the blank line
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || name[len(name)-1] == ' ' || name[0] == ' ' || name[0] == '\t' {
			return false, fmt.Errorf("a header line %q", truncate(line))
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Content-Range")):
			if gotRange || !bytes.Equal(value, rng) {
				return false, fmt.Errorf("Content-Range %q for %q", truncate(value), rng)
			}
			gotRange = true
		case bytes.EqualFold(name, []byte("Content-Length")):
			if gotLength || !bytes.Equal(value, length) {
				return false, fmt.Errorf("Content-Length %q for %q", truncate(value), length)
			}
			gotLength = true
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return false, errors.New("a transfer coding")
		case bytes.EqualFold(name, []byte("Content-Encoding")):
			if !bytes.EqualFold(value, []byte("identity")) {
				return false, errors.New("a content coding")
			}
		case bytes.EqualFold(name, []byte("ETag")):
			if etag != "" && string(value) != etag {
				return false, fmt.Errorf("ETag %q for %s", truncate(value), etag)
			}
		case bytes.EqualFold(name, []byte("Connection")):
			for len(value) > 0 {
				var tok []byte
				tok, value, _ = bytes.Cut(value, []byte(","))
				if bytes.EqualFold(bytes.Trim(tok, " \t"), []byte("close")) {
					keep = false
				}
			}
		}
	}
	if !gotRange || !gotLength {
		return false, errors.New("no Content-Range or no Content-Length")
	}
	return keep, nil
}

// truncate shortens what a hostile server sent for an error message.
func truncate(b []byte) []byte { return b[:min(len(b), 80)] }
