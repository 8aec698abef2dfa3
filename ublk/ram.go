package ublk

import (
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// ramRegioner is a Source whose bytes live in a file in RAM, which the
// server may read itself (sources.File; a wrapper that changes no bytes
// read passes it on).
type ramRegioner interface {
	RAMRegion(off, n int64) (fd int, fileOff int64, ok bool)
}

// ramWriteRegioner is a Source that also lets the server write its RAM
// file itself (sources.File over a memory: disk; a wrapper that checks
// writes does not pass it on).
type ramWriteRegioner interface {
	RAMWriteRegion(off, n int64) (fd int, fileOff int64, ok bool)
}

// ramMap is a shared mapping of a Source's RAM file, the window of
// bytes 0..size of the Source: under flagUserCopy the kernel copies a
// read's data straight from it, and a write's into it, one copy instead
// of two through a tag's buffer. Only the kernel touches the mapping
// (pread and pwrite on /dev/ublkcN): a file shrunk by someone else fails
// that request with EFAULT, it does not fault the server.
//
// A read fault on a hole of a shared tmpfs mapping allocates the page,
// where pread returns zeros: reads go through the mapping only in chunks
// that may hold data (written, marked in written), so that reading a
// sparse memory: disk does not fill it.
type ramMap struct {
	src      sources.Source
	fd       int
	mem      []byte // the mapping, from the page holding the window's start
	skip     int64  // where the window starts in mem
	size     int64
	writable bool
	// written has a bit per ramChunk of the window, set once the chunk
	// may hold data: allocated when mapped, or written since.
	written []atomic.Uint64
}

// ramChunkShift gives the granularity of ramMap.written: a bit per MiB
// (16 MiB of bits for the largest mappable file).
const ramChunkShift = 20

// newRAMMap maps src's RAM file, or returns nil when src has none (or it
// cannot be mapped: a file larger than the address space).
func newRAMMap(src sources.Source, readOnly bool) *ramMap {
	r, ok := src.(ramRegioner)
	size := src.Size()
	if !ok || size <= 0 {
		return nil
	}
	fd, base, ok := r.RAMRegion(0, size)
	if !ok {
		return nil
	}
	page := int64(unix.Getpagesize())
	start := base / page * page
	m := &ramMap{src: src, fd: fd, skip: base - start, size: size}
	length := int(m.skip + size)
	if int64(length) != m.skip+size {
		return nil
	}
	_, canWrite := src.(ramWriteRegioner)
	if canWrite && !readOnly {
		if mem, err := unix.Mmap(fd, start, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
			m.mem, m.writable = mem, true
		}
	}
	if m.mem == nil {
		mem, err := unix.Mmap(fd, start, length, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return nil
		}
		m.mem = mem
	}
	chunks := (size-1)>>ramChunkShift + 1
	m.written = make([]atomic.Uint64, (chunks+63)/64)
	m.markData(base)
	return m
}

// markData marks the chunks holding the file's data (SEEK_DATA, SEEK_HOLE
// from base, the window's start; every chunk where the file system cannot
// tell).
func (m *ramMap) markData(base int64) {
	for off := int64(0); off < m.size; {
		d, err := unix.Seek(m.fd, base+off, unix.SEEK_DATA)
		if err != nil {
			if err == unix.ENXIO { // no data past off
				return
			}
			m.mark(off, m.size-off)
			return
		}
		h, err := unix.Seek(m.fd, d, unix.SEEK_HOLE)
		if err != nil {
			h = base + m.size
		}
		if d-base >= m.size {
			return
		}
		m.mark(d-base, min(h-d, m.size-(d-base)))
		off = h - base
	}
}

// mark sets the written bits of the chunks bytes off..off+n touch.
func (m *ramMap) mark(off, n int64) {
	for c := off >> ramChunkShift; c <= (off+n-1)>>ramChunkShift; c++ {
		if w := &m.written[c/64]; w.Load()&(1<<(c%64)) == 0 {
			w.Or(1 << (c % 64))
		}
	}
}

// marked reports whether every chunk bytes off..off+n touch is marked.
func (m *ramMap) marked(off, n int64) bool {
	for c := off >> ramChunkShift; c <= (off+n-1)>>ramChunkShift; c++ {
		if m.written[c/64].Load()&(1<<(c%64)) == 0 {
			return false
		}
	}
	return true
}

// readable returns the mapped bytes off..off+n for a read, or nil when the
// Source no longer offers them or they may be holes.
func (m *ramMap) readable(off, n int64) []byte {
	if n <= 0 || !m.marked(off, n) {
		return nil
	}
	fd, _, ok := m.src.(ramRegioner).RAMRegion(off, n)
	if !ok || fd != m.fd {
		return nil
	}
	return m.mem[m.skip+off : m.skip+off+n : m.skip+off+n]
}

// writableAt returns the mapped bytes off..off+n for a write, or nil when
// the Source does not let the server write them itself.
func (m *ramMap) writableAt(off, n int64) []byte {
	if !m.writable || n <= 0 {
		return nil
	}
	fd, _, ok := m.src.(ramWriteRegioner).RAMWriteRegion(off, n)
	if !ok || fd != m.fd {
		return nil
	}
	m.mark(off, n)
	return m.mem[m.skip+off : m.skip+off+n : m.skip+off+n]
}

// close unmaps the file.
func (m *ramMap) close() {
	if m != nil && m.mem != nil {
		unix.Munmap(m.mem)
		m.mem = nil
	}
}
