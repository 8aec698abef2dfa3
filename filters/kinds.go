package filters

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/internal/request"
)

// kind parses one type of value and renders it in canonical form.
type kind struct {
	parse func(s string) (any, string, error)
	path  bool // the value is a file name
}

// durationKind: milliseconds, or a Go duration ("100ms", "1.5s", "2m").
var durationKind = kind{parse: func(s string) (any, string, error) {
	if s == "" {
		return nil, "", errors.New("is empty (use e.g. 100ms, 2s)")
	}
	var d time.Duration
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		if n > uint64(maxDuration/time.Millisecond) {
			return nil, "", fmt.Errorf("is longer than %v", maxDuration)
		}
		d = time.Duration(n) * time.Millisecond
	} else {
		var err error
		d, err = time.ParseDuration(s)
		if err != nil {
			return nil, "", errors.New("is not a duration (use e.g. 100 or 100ms for milliseconds, 2s, 1m)")
		}
	}
	if d < 0 {
		return nil, "", errors.New("is negative")
	}
	if d > maxDuration {
		return nil, "", fmt.Errorf("is longer than %v", maxDuration)
	}
	return d, d.String(), nil
}}

// maxDuration bounds delays and intervals: longer ones are typing mistakes.
const maxDuration = 24 * time.Hour

// sizeKind: bytes, with losetup's suffixes.
var sizeKind = kind{parse: func(s string) (any, string, error) {
	n, err := parseSize(s)
	if err != nil {
		return nil, "", err
	}
	return n, strconv.FormatInt(n, 10), nil
}}

// bandwidthKind: bytes per second, with losetup's suffixes and an optional
// "/s"; 0 means unlimited.
var bandwidthKind = kind{parse: func(s string) (any, string, error) {
	n, err := parseSize(strings.TrimSuffix(s, "/s"))
	if err != nil {
		return nil, "", err
	}
	return n, strconv.FormatInt(n, 10), nil
}}

// blockSizeKind: a power of two from 512 bytes to 1 MiB.
var blockSizeKind = kind{parse: func(s string) (any, string, error) {
	n, err := parseSize(s)
	if err != nil {
		return nil, "", err
	}
	if n < 512 || n > 1<<20 || n&(n-1) != 0 {
		return nil, "", errors.New("is not a power of two from 512 to 1M")
	}
	return n, strconv.FormatInt(n, 10), nil
}}

// probabilityKind: 0..1, or a percentage.
var probabilityKind = kind{parse: func(s string) (any, string, error) {
	t, pct := strings.CutSuffix(s, "%")
	p, err := strconv.ParseFloat(t, 64)
	if err != nil || strings.ContainsAny(t, "xXpP_iInN") {
		return nil, "", errors.New("is not a probability (use e.g. 0.1 or 10%)")
	}
	if pct {
		p /= 100
	}
	if !(p >= 0 && p <= 1) {
		return nil, "", errors.New("is out of range 0..1 or 0%..100%")
	}
	return p, strconv.FormatFloat(p, 'g', -1, 64), nil
}}

// countKind: a whole number.
var countKind = kind{parse: func(s string) (any, string, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, "", errors.New("is not a whole number from 0 to 2^64-1")
	}
	return n, strconv.FormatUint(n, 10), nil
}}

// pathKind: a file name; it cannot contain a comma.
var pathKind = kind{parse: func(s string) (any, string, error) {
	if s == "" {
		return nil, "", errors.New("is empty (give a file name)")
	}
	return s, s, nil
}, path: true}

// boolKind: true or false (also yes/no, on/off, 1/0).
var boolKind = kind{parse: func(s string) (any, string, error) {
	switch strings.ToLower(s) {
	case "true", "yes", "on", "1":
		return true, "true", nil
	case "false", "no", "off", "0":
		return false, "false", nil
	}
	return nil, "", errors.New("is not a boolean (use true or false)")
}}

// errnoKind: an errno name that NBD can carry.
var errnoKind = kind{parse: func(s string) (any, string, error) {
	for _, e := range errnos {
		if strings.EqualFold(s, e.name) {
			return e.errno, e.name, nil
		}
	}
	return nil, "", fmt.Errorf("is not an error the NBD protocol carries (use %s)", errnoNames())
}}

// opsKind: request kinds joined by "+", or "all".
var opsKind = kind{parse: func(s string) (any, string, error) {
	if s == "all" {
		return allOps, "all", nil
	}
	var set OpSet
	for _, name := range strings.Split(s, "+") {
		op, ok := request.ParseOp(name)
		if !ok {
			return nil, "", errors.New("is not a list of read, write, flush, trim, zero joined by + (or all)")
		}
		set |= 1 << op
	}
	return set, set.String(), nil
}}

// rangeKind: START-END (END exclusive) or START+LENGTH, sizes with
// suffixes.
var rangeKind = kind{parse: func(s string) (any, string, error) {
	bad := errors.New("is not a byte range (use START-END, END exclusive, or START+LENGTH, e.g. 1M-2M or 1M+4K)")
	if i := strings.IndexAny(s, "-+"); i > 0 {
		start, err1 := parseSize(s[:i])
		second, err2 := parseSize(s[i+1:])
		if err1 != nil || err2 != nil {
			return nil, "", bad
		}
		end := second
		if s[i] == '+' {
			if second > math.MaxInt64-start {
				return nil, "", errors.New("ends past 2^63-1")
			}
			end = start + second
		}
		if end <= start {
			return nil, "", errors.New("is empty (END must be greater than START)")
		}
		r := Range{Start: start, End: end}
		return r, r.String(), nil
	}
	return nil, "", bad
}}

// Range is a range of bytes [Start, End).
type Range struct {
	Start, End int64
}

// String renders r as START-END.
func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Start, r.End) }

// overlaps reports whether [off, off+n) touches a range of rs. Empty
// requests touch nothing.
func overlaps(rs []Range, off, n int64) bool {
	if n <= 0 {
		return false
	}
	for _, r := range rs {
		if off < r.End && off+n > r.Start && off+n > off {
			return true
		}
	}
	return false
}

// parseSize reads BYTES with bytesize.Parse (attach's SIZE) and words its
// errors to follow KEY "VALUE", as every kind's errors do.
func parseSize(s string) (int64, error) {
	n, err := bytesize.Parse(s)
	var se *bytesize.SuffixError
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, bytesize.ErrTooLarge):
		return 0, errors.New("is larger than 2^63-1")
	case errors.As(err, &se):
		return 0, fmt.Errorf("has an unknown suffix %q (use %s)", se.Suffix, bytesize.Suffixes)
	}
	return 0, errors.New("is not a size (use e.g. 4096, 512K, 10M, 1G)")
}

// errnos are the errors an NBD reply can carry (they equal Linux's errno
// values); the error filter injects them and the log names them.
var errnos = []struct {
	name  string
	errno syscall.Errno
}{
	{"EIO", syscall.EIO},
	{"ENOSPC", syscall.ENOSPC},
	{"EPERM", syscall.EPERM},
	{"ENOMEM", syscall.ENOMEM},
	{"EINVAL", syscall.EINVAL},
	{"EOVERFLOW", syscall.EOVERFLOW},
	{"ENOTSUP", syscall.ENOTSUP},
	{"ESHUTDOWN", syscall.ESHUTDOWN},
}

func errnoNames() string {
	n := make([]string, len(errnos))
	for i, e := range errnos {
		n[i] = e.name
	}
	return strings.Join(n, ", ")
}

// errnoName names an NBD error value: "" for 0, "EIO", or "E<number>" for
// one the protocol does not define.
func errnoName(code uint32) string {
	if code == 0 {
		return ""
	}
	for _, e := range errnos {
		if uint32(e.errno) == code {
			return e.name
		}
	}
	return "E" + strconv.FormatUint(uint64(code), 10)
}
