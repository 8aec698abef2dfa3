package script

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzReply feeds arbitrary program output to every parser of it: the
// persistent status line, the errno report on stderr, get_size and
// block_size. Properties: no panic; messages are one line of valid UTF-8
// without control characters and bounded in length; sizes are never
// negative; a status is 0..255.
func FuzzReply(f *testing.F) {
	for _, s := range []string{
		"0", "0 1048576", "1 ENOSPC disk full", "1 enospc", "2", "3", "255", "256", "-1", "0\r", "",
		"ENOSPC Out of space\nmore", "EINVALID x", "EPERM\tno", "E", "\xff\xfe ENOSPC",
		"1M", "64K", "1GiB", " 512 \n", "8E", "9E", "18446744073709551616", "1x", "b",
		"512 4K 1M", "0 0 0", "3 512 1M", "512 512 4294967295",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if st, _, err := parseStatus([]byte(s)); err == nil && (st < 0 || st > 255) {
			t.Fatalf("parseStatus(%q) = %d, want 0..255", s, st)
		}
		errno, msg := parseFailure([]byte(s))
		if errno == 0 {
			t.Fatalf("parseFailure(%q) errno = 0, want an error", s)
		}
		if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\n\r\x00") || len(msg) > 4*maxMsg+64 {
			t.Fatalf("parseFailure(%q) message = %q: want one bounded line of valid UTF-8", s, msg)
		}
		if n, err := parseSize(s); err == nil && n < 0 {
			t.Fatalf("parseSize(%q) = %d, want >= 0", s, n)
		}
		if b, err := parseBlockSizes(s); err == nil && (b.Min < 0 || b.Preferred < b.Min || b.Max < 0) {
			t.Fatalf("parseBlockSizes(%q) = %+v: inconsistent", s, b)
		}
	})
}

// FuzzOptions checks that options ParseOptions accepts render, with
// String, to options that parse the same.
func FuzzOptions(f *testing.F) {
	for _, s := range []string{
		"", "persistent", "timeout=10s", "timeout=5", "persistent,timeout=1m30s,file=disk.img,size=1G",
		"bare", "a=b=c", "x.y-z=", "timeout", ",", "persistent,persistent", "9=1", "timeout=0", "timeout=25h",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseOptions(s)
		if err != nil {
			return
		}
		if o.Timeout < 0 || o.Timeout > MaxTimeout {
			t.Fatalf("ParseOptions(%q) timeout = %v", s, o.Timeout)
		}
		again, err := ParseOptions(o.String())
		if err != nil {
			t.Fatalf("ParseOptions(%q) = %v; the options came from ParseOptions(%q)", o.String(), err, s)
		}
		if again.String() != o.String() || again.Persistent != o.Persistent || again.Timeout != o.Timeout || len(again.Params) != len(o.Params) {
			t.Fatalf("ParseOptions(%q) = %+v, want %+v", o.String(), again, o)
		}
		for i := range o.Params {
			if again.Params[i] != o.Params[i] {
				t.Fatalf("ParseOptions(%q) param %d = %+v, want %+v", o.String(), i, again.Params[i], o.Params[i])
			}
		}
	})
}
