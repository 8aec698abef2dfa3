package ublk

import (
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
type ramMap struct {
	src      sources.Source
	fd       int
	mem      []byte // the mapping, from the page holding the window's start
	skip     int64  // where the window starts in mem
	size     int64
	writable bool
}

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
			return m
		}
	}
	mem, err := unix.Mmap(fd, start, length, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	m.mem = mem
	return m
}

// readable returns the mapped bytes off..off+n for a read, or nil when the
// Source no longer offers them.
func (m *ramMap) readable(off, n int64) []byte {
	fd, _, ok := m.src.(ramRegioner).RAMRegion(off, n)
	if !ok || fd != m.fd {
		return nil
	}
	return m.mem[m.skip+off : m.skip+off+n : m.skip+off+n]
}

// writableAt returns the mapped bytes off..off+n for a write, or nil when
// the Source does not let the server write them itself.
func (m *ramMap) writableAt(off, n int64) []byte {
	if !m.writable {
		return nil
	}
	fd, _, ok := m.src.(ramWriteRegioner).RAMWriteRegion(off, n)
	if !ok || fd != m.fd {
		return nil
	}
	return m.mem[m.skip+off : m.skip+off+n : m.skip+off+n]
}

// close unmaps the file.
func (m *ramMap) close() {
	if m != nil && m.mem != nil {
		unix.Munmap(m.mem)
		m.mem = nil
	}
}
