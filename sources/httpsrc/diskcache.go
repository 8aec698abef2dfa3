package httpsrc

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nbdloop/nbdloop/sources/internal/blockstore"
)

// offlineError is a Stat that failed because the server did not answer in
// time (a refused or reset connection, a timeout, a 5xx): a version of
// the object kept in Options.CacheDir may then be served.
type offlineError struct{ err error }

func (e *offlineError) Error() string { return e.err.Error() }
func (e *offlineError) Unwrap() error { return e.err }

// openStore opens the file of o's blocks in Options.CacheDir, or says in
// a warning why the blocks are kept in memory only.
func (o *Object) openStore() error {
	if o.opts.CacheDir == "" {
		return nil
	}
	if o.etag == "" && o.date == "" {
		o.warns = append(o.warns, "not cached in "+o.opts.CacheDir+": without an ETag or a Last-Modified date a replaced object cannot be told from the one cached")
		return nil
	}
	limit := o.opts.DiskCacheSize
	if limit <= 0 {
		limit = o.opts.CacheSize
	}
	if b := o.opts.DiskBudget; b != nil {
		bs := o.opts.BlockSize
		// The file never needs more than the object's blocks.
		limit = b.take(min(limit, (o.size+bs-1)/bs*bs), bs)
		if limit == 0 {
			o.warns = append(o.warns, "not cached in "+o.opts.CacheDir+": the device's other objects hold all of its --cache-size there (give a larger --cache-size)")
			return nil
		}
	}
	st, err := blockstore.Open(blockstore.Options{
		Dir: o.opts.CacheDir, Location: o.name, Pin: o.Pin(), Size: o.size, BlockSize: o.opts.BlockSize,
		Limit: limit, Logf: o.opts.Logf,
	})
	if err != nil && o.opts.DiskBudget != nil {
		o.opts.DiskBudget.give(limit)
	}
	if errors.Is(err, blockstore.ErrBusy) {
		o.warns = append(o.warns, fmt.Sprintf("not cached on disk: %v (another device serves the same URL from the same --cache-dir)", err))
		return nil
	}
	if err != nil {
		return err
	}
	o.store = st
	if o.opts.DiskBudget != nil {
		o.diskTaken = limit
	}
	return nil
}

// statCached is Stat for a server that did not answer: the version of
// the object whose blocks CacheDir keeps, served from there (blocks it
// lacks are asked of the server, which may be back by then).
func statCached(raw string, o *Object, why error) (*Object, error) {
	v, ok, err := blockstore.Cached(o.opts.CacheDir, raw)
	if err != nil || !ok || v.BlockSize != o.opts.BlockSize {
		return nil, why
	}
	if o.opts.Pin != "" && v.Pin != o.opts.Pin {
		return nil, why
	}
	switch {
	case strings.HasPrefix(v.Pin, "etag:"):
		o.etag = strings.TrimPrefix(v.Pin, "etag:")
	case strings.HasPrefix(v.Pin, "date:"):
		o.date = strings.TrimPrefix(v.Pin, "date:")
	default:
		return nil, why
	}
	o.size = v.Size
	if err := o.openStore(); err != nil || o.store == nil {
		return nil, why
	}
	o.warns = append(o.warns, fmt.Sprintf("the server did not answer (%v): serving the version cached in %s (%s); blocks not cached there are asked of the server", why, o.opts.CacheDir, o.Pin()))
	return o, nil
}

// blockReader reads block b of the object ([off, end)): from the store if
// it holds the block and it passes its check, else from the server,
// storing what it fetches. Given net (positioned at off, and not its to
// close), it reads the block from there without asking the store.
type blockReader struct {
	o        *Object
	b        int64
	off, end int64
	upTo     int64        // a request it makes asks for [off, upTo): end, or a run's end
	net      *rangeReader // the server's bytes from off
	fetching bool
	slot     int
	crc      uint32
	done     int64 // bytes returned
}

func (r *blockReader) Read(p []byte) (int, error) {
	n := r.end - r.off
	if r.done == n {
		return 0, io.EOF
	}
	if !r.fetching {
		if r.net == nil {
			if int64(len(p)) >= n && r.o.store.Get(r.b, p[:n]) {
				r.done = n
				return int(n), io.EOF
			}
			if r.upTo > r.end {
				r.net = r.o.runReader(r.off, r.upTo)
			} else {
				r.net = r.o.reader(r.off, r.end)
			}
		}
		r.fetching = true
		r.slot = r.o.store.Reserve(r.b)
		r.crc = blockstore.Sum(r.b, nil)
	}
	k, err := r.net.Read(p[:min(int64(len(p)), n-r.done)])
	if r.slot >= 0 && k > 0 {
		if r.o.store.Write(r.slot, p[:k], r.done) {
			r.crc = blockstore.Update(r.crc, p[:k])
		} else {
			r.abort()
		}
	}
	r.done += int64(k)
	if r.slot >= 0 && r.done == n && err == nil {
		r.o.store.Commit(r.slot, n, r.crc)
		r.slot = -1
	}
	return k, err
}

func (r *blockReader) abort() {
	if r.slot >= 0 {
		r.o.store.Abort(r.slot)
		r.slot = -1
	}
}

// Close ends the request in flight, unless it serves a run, and forgets
// a block not fetched whole.
func (r *blockReader) Close() error {
	r.abort()
	if r.net != nil && r.upTo <= r.end {
		r.net.Close()
	}
	return nil
}

// storedRun reads blocks b..last-1 (ending at byte end) through the
// store: each from the store until one is missing, then the rest from
// one request, stored as they come.
type storedRun struct {
	o       *Object
	b, last int64
	end     int64
	cur     *blockReader
	net     *rangeReader
}

func (r *storedRun) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if r.b == r.last {
				return 0, io.EOF
			}
			bs := r.o.opts.BlockSize
			off := r.b * bs
			r.cur = &blockReader{o: r.o, b: r.b, off: off, end: min(off+bs, r.o.size), upTo: r.end, slot: -1}
			if r.net != nil && r.net.off != off {
				r.net.Close()
				r.net = nil
			}
			r.cur.net = r.net
		}
		k, err := r.cur.Read(p)
		if r.cur.net != nil {
			r.net = r.cur.net
		}
		if err == io.EOF {
			r.cur.Close()
			r.cur = nil
			r.b++
			if k == 0 {
				continue
			}
			err = nil
		}
		return k, err
	}
}

// Close ends the request in flight and forgets a block not fetched
// whole.
func (r *storedRun) Close() error {
	if r.cur != nil {
		r.cur.Close()
	}
	if r.net != nil {
		r.net.Close()
	}
	return nil
}

// readBlocks is Object.ReadAt through the store: whole blocks, read back
// or fetched and stored.
func (o *Object) readBlocks(p []byte, off int64) (int, error) {
	bs := o.opts.BlockSize
	var buf []byte
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		b := pos / bs
		lo, hi := b*bs, min((b+1)*bs, o.size)
		if buf == nil {
			buf = make([]byte, bs)
		}
		r := &blockReader{o: o, b: b, off: lo, end: hi, slot: -1}
		_, err := io.ReadFull(r, buf[:hi-lo])
		r.Close()
		if err != nil {
			return n, err
		}
		n += copy(p[n:], buf[pos-lo:hi-lo])
	}
	return n, nil
}

// DiskStats returns the counters of the blocks kept in Options.CacheDir
// (zero without one).
func (s *Source) DiskStats() blockstore.Stats {
	if s.obj.store == nil {
		return blockstore.Stats{}
	}
	return s.obj.store.Stats()
}
