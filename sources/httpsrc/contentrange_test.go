package httpsrc

import (
	"fmt"
	"testing"
)

// FuzzContentRange: no Content-Range a server sends makes parseContentRange
// panic, and what it accepts is a range inside the object it names: 0 <=
// first <= last < total, which the same header, written out again, says.
func FuzzContentRange(f *testing.F) {
	for _, s := range []string{
		"bytes 0-0/1", "bytes 0-1048575/1073741824", "bytes 9223372036854775806-9223372036854775806/9223372036854775807",
		"bytes 5-4/10", "bytes 0-9/10", "bytes -1-5/10", "bytes 0-5/*", "bytes */10", "bytes 0-18446744073709551615/1",
		"bytes +0-+9/+10", "bytes 0-9/10/11", "bytes  0-9/10", "items 0-9/10", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		first, last, total, err := parseContentRange(h)
		if err != nil {
			return
		}
		if first < 0 || last < first || total <= last {
			t.Fatalf("%q: accepted %d-%d/%d", h, first, last, total)
		}
		a, b, c, err := parseContentRange(fmt.Sprintf("bytes %d-%d/%d", first, last, total))
		if err != nil || a != first || b != last || c != total {
			t.Fatalf("%q: %d-%d/%d written out parses as %d-%d/%d, %v", h, first, last, total, a, b, c, err)
		}
	})
}
