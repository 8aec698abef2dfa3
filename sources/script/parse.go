package script

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// Status values: nbdkit's exit codes, also the first word of a persistent
// program's reply.
const (
	statusOK      = 0
	statusError   = 1
	statusMissing = 2
	statusFalse   = 3
)

// Error is a call that failed: the program said so (exit status 1, or
// status line 1), or it broke the rules (timeout, short read, crash). It
// unwraps to Errno, so the NBD server sends that errno to the kernel.
type Error struct {
	Script string        // the program's path
	Method string        // pread, pwrite, ...
	Errno  syscall.Errno // EIO unless the program named another
	Msg    string        // one line, from the program or about it
}

func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = e.Errno.Error()
	}
	return fmt.Sprintf("%s %s: %s", e.Script, e.Method, msg)
}

// Unwrap returns Errno.
func (e *Error) Unwrap() error { return e.Errno }

// maxMsg bounds the message kept from a program's stderr or status line.
const maxMsg = 512

// errnoByName returns the errno whose name is name (case ignored), as in
// <errno.h>: EIO, ENOSPC, ENOTSUP, ...
func errnoByName(name string) (syscall.Errno, bool) {
	if len(name) < 2 || len(name) > 20 || (name[0] != 'E' && name[0] != 'e') {
		return 0, false
	}
	name = strings.ToUpper(name)
	switch name { // aliases that ErrnoName does not return
	case "ENOTSUP", "EOPNOTSUPP":
		return syscall.ENOTSUP, true
	case "EWOULDBLOCK":
		return syscall.EWOULDBLOCK, true
	case "EDEADLOCK":
		return syscall.EDEADLOCK, true
	}
	for e := syscall.Errno(1); e < 256; e++ {
		if unix.ErrnoName(e) == name {
			return e, true
		}
	}
	return 0, false
}

// parseFailure reads an nbdkit error report, an errno name optionally
// followed by whitespace and a message ("ENOSPC Out of space"), from the
// first line of b. Without a recognised errno name the whole line is the
// message and the errno is EIO, as in nbdkit ("EINVALID" is EIO too).
func parseFailure(b []byte) (syscall.Errno, string) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	line = bytes.TrimSpace(line)
	word, rest, _ := bytes.Cut(line, []byte(" "))
	if i := bytes.IndexAny(word, "\t\r\v\f"); i >= 0 {
		word, rest = word[:i], line[i+1:]
	}
	errno, ok := errnoByName(string(word))
	if !ok {
		return syscall.EIO, cleanMsg(line)
	}
	msg := cleanMsg(bytes.TrimSpace(rest))
	if msg == "" {
		msg = fmt.Sprintf("%s (%v)", word, errno)
	} else {
		msg = fmt.Sprintf("%s %s", word, msg)
	}
	return errno, msg
}

// cleanMsg makes program output safe for a one-line log message: at most
// maxMsg bytes, control characters and invalid UTF-8 replaced.
func cleanMsg(b []byte) string {
	if len(b) > maxMsg {
		b = b[:maxMsg]
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			r = '?'
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// parseSize reads a size a program printed (get_size, block_size) with
// bytesize.Parse, the SIZE grammar of attach; errors quote the output.
func parseSize(s string) (int64, error) {
	n, err := bytesize.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", cleanMsg([]byte(strings.TrimSpace(s))), err)
	}
	return n, nil
}

// BlockSizes are what the block_size method prints: the minimum, preferred
// and maximum request sizes of the program, or zeros when it has none.
type BlockSizes struct {
	Min, Preferred, Max int64
}

// parseBlockSizes reads block_size's output: three sizes separated by
// whitespace, checked as nbdkit checks them (minimum a power of 2 up to
// 64 KiB, preferred a power of 2 from 512 and not below the minimum up to
// 32 MiB, maximum not below the preferred... or 0xffffffff).
func parseBlockSizes(s string) (BlockSizes, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return BlockSizes{}, fmt.Errorf("%q: want three sizes: minimum, preferred, maximum", cleanMsg([]byte(s)))
	}
	var v [3]int64
	for i := range f {
		n, err := parseSize(f[i])
		if err != nil {
			return BlockSizes{}, err
		}
		v[i] = n
	}
	b := BlockSizes{Min: v[0], Preferred: v[1], Max: v[2]}
	if b == (BlockSizes{}) {
		return b, nil
	}
	pow2 := func(n int64) bool { return n > 0 && n&(n-1) == 0 }
	switch {
	case !pow2(b.Min) || b.Min > 64<<10:
		return BlockSizes{}, fmt.Errorf("minimum block size %d: must be a power of 2 up to 64K", b.Min)
	case !pow2(b.Preferred) || b.Preferred < 512 || b.Preferred < b.Min || b.Preferred > 32<<20:
		return BlockSizes{}, fmt.Errorf("preferred block size %d: must be a power of 2 from 512 (and the minimum) to 32M", b.Preferred)
	case b.Max != 0xffffffff && (b.Max < b.Preferred || b.Max%b.Min != 0):
		return BlockSizes{}, fmt.Errorf("maximum block size %d: must be a multiple of the minimum, at least the preferred size", b.Max)
	}
	return b, nil
}

// errBadStatus is a persistent program's reply that is not a status line.
var errBadStatus = errors.New("bad status line")

// parseStatus reads a persistent program's status line (without its
// newline): a status number 0..255, then for 0 the value and for an error
// an errno name and message.
func parseStatus(line []byte) (status int, rest string, err error) {
	word, tail, _ := bytes.Cut(line, []byte(" "))
	n, perr := strconv.ParseUint(string(word), 10, 8)
	if perr != nil || len(word) > 3 {
		return 0, "", fmt.Errorf("%w %q (want 0, 1 ERRNO, 2 or 3)", errBadStatus, cleanMsg(line))
	}
	return int(n), string(tail), nil
}
