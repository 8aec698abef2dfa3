package filters

import (
	"fmt"
	"syscall"

	"github.com/nbdloop/nbdloop/sources"
)

var protectDef = &Def{
	Name:    "protect",
	Summary: "refuse writes to byte ranges, or to everything while a file exists",
	Doc: "Refuses writes, trims and zeroes that touch the protected bytes with EPERM (the " +
		"kernel reports an I/O error); reads and flushes pass, and so do modifications " +
		"elsewhere. Use it to keep a partition table or a boot sector safe, or to freeze a " +
		"device on demand. Without range, the whole device is protected. " +
		"Example, the first MiB: --filter protect:range=0-1M",
	Options: []Option{
		{Key: "range", Value: "RANGE", Repeat: true, kind: rangeKind,
			Help: "protect these bytes (default: the whole device)"},
		{Key: "file", Value: "PATH", kind: pathKind,
			Help: "protect only while PATH exists (watched with inotify, and checked every second)"},
	},
	open: func(next sources.Source, a args, env Env) (sources.Source, error) {
		return NewProtect(next, ProtectOptions{Ranges: a.ranges("range"), File: a.str("file")}), nil
	},
}

var readonlyDef = &Def{
	Name:    "readonly",
	Summary: "make the device read-only, always or while a file exists",
	Doc: "The same as protect without range. Without file, the kernel is told that the device " +
		"is read-only (as with attach -r); with file, writes fail with EPERM while the file " +
		"exists and work again once it is gone. Example: --filter readonly:file=/tmp/freeze",
	Options: []Option{
		{Key: "file", Value: "PATH", kind: pathKind,
			Help: "read-only only while PATH exists (watched with inotify, and checked every second)"},
	},
	open: func(next sources.Source, a args, env Env) (sources.Source, error) {
		return NewProtect(next, ProtectOptions{File: a.str("file")}), nil
	},
}

// ProtectOptions configure a Protect filter; see the protect and readonly
// entries of Help.
type ProtectOptions struct {
	Ranges []Range // protected bytes; none: all of them
	File   string  // protect only while this file exists
}

// ErrProtected is returned for modifications of protected bytes.
var ErrProtected = fmt.Errorf("filters: protect filter: the range is protected: %w", syscall.EPERM)

// Protect refuses modifications (WriteAt, Trim, Zero) that touch protected
// byte ranges, or every modification, always or while a trigger file
// exists. Reads and flushes pass.
//
// Caps: with neither ranges nor file the filter is read-only (ReadOnly and
// Parallel and Rotational as next; every modification returns
// sources.ErrReadOnly); otherwise next's, unchanged, and refused
// modifications return ErrProtected (EPERM).
type Protect struct {
	next   sources.Source
	caps   sources.Caps
	ranges []Range
	trig   *trigger
}

// NewProtect wraps next. Closing the filter closes next.
func NewProtect(next sources.Source, opts ProtectOptions) *Protect {
	c := next.Caps()
	p := &Protect{next: next, ranges: opts.Ranges, trig: newTrigger(opts.File)}
	if len(opts.Ranges) == 0 && opts.File == "" {
		p.caps = sources.Caps{ReadOnly: true, Parallel: c.Parallel, Rotational: c.Rotational, InMemory: c.InMemory}
	} else {
		p.caps = sources.Caps{
			ReadOnly: c.ReadOnly, Flush: c.Flush, Trim: c.Trim, Zero: c.Zero,
			Parallel: c.Parallel, Rotational: c.Rotational, InMemory: c.InMemory,
		}
	}
	return p
}

// refuse returns the error for a modification of [off, off+length), or
// nil when it may pass.
func (p *Protect) refuse(off, length int64) error {
	if p.caps.ReadOnly {
		return sources.ErrReadOnly
	}
	if !p.trig.active() {
		return nil
	}
	if len(p.ranges) == 0 {
		return ErrProtected
	}
	if overlaps(p.ranges, off, length) {
		return ErrProtected
	}
	return nil
}

// Size returns next's size.
func (p *Protect) Size() int64 { return p.next.Size() }

// Caps returns next's capabilities, or read-only ones; see Protect.
func (p *Protect) Caps() sources.Caps { return p.caps }

// ReadAt reads from next.
func (p *Protect) ReadAt(b []byte, off int64) (int, error) { return p.next.ReadAt(b, off) }

// WriteAt writes to next unless the range is protected.
func (p *Protect) WriteAt(b []byte, off int64) (int, error) {
	if err := p.refuse(off, int64(len(b))); err != nil {
		return 0, err
	}
	return p.next.WriteAt(b, off)
}

// Flush flushes next.
func (p *Protect) Flush() error { return p.next.Flush() }

// Trim trims next unless the range is protected.
func (p *Protect) Trim(off, length int64) error {
	if err := p.refuse(off, length); err != nil {
		return err
	}
	return p.next.Trim(off, length)
}

// Zero zeros next unless the range is protected.
func (p *Protect) Zero(off, length int64, mayTrim bool) error {
	if err := p.refuse(off, length); err != nil {
		return err
	}
	return p.next.Zero(off, length, mayTrim)
}

// Close stops watching the trigger file and closes next.
func (p *Protect) Close() error { return closeChain(p, p.next) }

func (p *Protect) release() error {
	p.trig.close()
	return nil
}

// Extents passes next's extents on: the filter does not change what the
// bytes are.
func (p *Protect) Extents(off, length int64, fn func(sources.Extent) bool) error {
	return sources.Extents(p.next, off, length, fn)
}
