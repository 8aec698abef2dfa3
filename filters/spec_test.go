package filters

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want string // String() of the result
	}{
		{in: "error", want: "error"},
		{in: "error:", want: "error"},
		{in: "error:rate=1,file=/tmp/error0", want: "error:rate=1,file=/tmp/error0"},
		{in: "error:rate=10%", want: "error:rate=0.1"},
		{in: "error:rate=0.25,seed=42", want: "error:rate=0.25,seed=42"},
		{in: "error:error=enospc", want: "error:error=ENOSPC"},
		{in: "error:ops=write+read", want: "error:ops=read+write"},
		{in: "error:ops=read+write+flush+trim+zero", want: "error:ops=all"},
		{in: "error:range=1M-2M,range=4K+512", want: "error:range=1048576-2097152,range=4096-4608"},
		{in: "error:after=100", want: "error:after=100"},
		{in: "delay:read=100", want: "delay:read=100ms"},
		{in: "delay:write=1.5s,jitter=10ms,after=2s", want: "delay:write=1.5s,jitter=10ms,after=2s"},
		{in: "delay:all=0", want: "delay:all=0s"},
		{in: "delay:file=/tmp/slow,read=5", want: "delay:file=/tmp/slow,read=5ms"},
		{in: "rate:limit=10M", want: "rate:limit=10485760"},
		{in: "rate:read=1MB/s,write=512K", want: "rate:read=1000000,write=524288"},
		{in: "rate:file=/tmp/rate", want: "rate:file=/tmp/rate"},
		{in: "rate:limit=1kb", want: "rate:limit=1000"}, // the SIZE grammar: KB is 1000
		{in: "rate:limit=2gib/s,read=3b", want: "rate:limit=2147483648,read=3"},
		{in: "error:range=1KB+1kB", want: "error:range=1000-2000"},
		{in: "cow", want: "cow"},
		{in: "cow:file=/var/tmp/ov,keep=yes", want: "cow:file=/var/tmp/ov,keep=true"},
		{in: "cow:block-size=64KiB", want: "cow:block-size=65536"},
		{in: "protect:range=0-1M", want: "protect:range=0-1048576"},
		{in: "protect:file=/tmp/p", want: "protect:file=/tmp/p"},
		{in: "readonly", want: "readonly"},
		{in: "log:file=/tmp/log.jsonl", want: "log:file=/tmp/log.jsonl"},
		{in: "log:file=a=b.jsonl,append=1", want: "log:file=a=b.jsonl,append=true"},
		{in: "stats", want: "stats"},
		{in: "stats:interval=250", want: "stats:interval=250ms"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q) = %v", tt.in, err)
			}
			if got := s.String(); got != tt.want {
				t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{in: "", want: `--filter "": no filter name (use one of error, delay, rate, cow, protect, readonly, log, stats)`},
		{in: "erorr:rate=1", want: `unknown filter "erorr" (use one of error, delay, rate, cow, protect, readonly, log, stats)`},
		{in: "error:rat=1", want: `error filter: unknown key "rat" (keys: error, rate, file, ops, range, after, seed)`},
		{in: "error:rate", want: `error filter: "rate" is not KEY=VALUE (keys: error, rate, file, ops, range, after, seed)`},
		{in: "error:=1", want: `error filter: "=1" is not KEY=VALUE`},
		{in: "error:rate=1,", want: `error filter: "" is not KEY=VALUE`},
		{in: "error:rate=1.5", want: `error filter: rate "1.5" is out of range 0..1 or 0%..100%`},
		{in: "error:rate=150%", want: `error filter: rate "150%" is out of range 0..1 or 0%..100%`},
		{in: "error:rate=NaN", want: `error filter: rate "NaN" is not a probability (use e.g. 0.1 or 10%)`},
		{in: "error:rate=1,rate=0", want: `error filter: rate given twice`},
		{in: "error:error=EAGAIN", want: `error filter: error "EAGAIN" is not an error the NBD protocol carries (use EIO, ENOSPC, EPERM, ENOMEM, EINVAL, EOVERFLOW, ENOTSUP, ESHUTDOWN)`},
		{in: "error:ops=read,write", want: `error filter: "write" is not KEY=VALUE`},
		{in: "error:ops=read+discard", want: `error filter: ops "read+discard" is not a list of read, write, flush, trim, zero joined by + (or all)`},
		{in: "error:range=2M-1M", want: `error filter: range "2M-1M" is empty (END must be greater than START)`},
		{in: "error:range=1M", want: `error filter: range "1M" is not a byte range`},
		{in: "error:range=8E+1", want: `error filter: range "8E+1" is not a byte range`},
		{in: "error:range=4E+4E", want: `error filter: range "4E+4E" ends past 2^63-1`},
		{in: "error:after=-1", want: `error filter: after "-1" is not a whole number`},
		{in: "error:file=", want: `error filter: file "" is empty (give a file name)`},
		{in: "delay:read=fast", want: `delay filter: read "fast" is not a duration (use e.g. 100 or 100ms for milliseconds, 2s, 1m)`},
		{in: "delay:read=-5ms", want: `delay filter: read "-5ms" is negative`},
		{in: "delay:read=25h", want: `delay filter: read "25h" is longer than 24h0m0s`},
		{in: "delay:read=99999999999999999", want: `delay filter: read "99999999999999999" is longer than 24h0m0s`},
		{in: "rate", want: `rate filter: give a limit (limit=, read= or write=, in bytes per second) or a file holding one`},
		{in: "rate:limit=10Q", want: `rate filter: limit "10Q" has an unknown suffix "Q" (use K, M, G, T, P, E, KiB.. or KB..)`},
		{in: "rate:limit=8E", want: `rate filter: limit "8E" is larger than 2^63-1`},
		{in: "rate:limit=1Z", want: `rate filter: limit "1Z" is larger than 2^63-1`},
		{in: "rate:limit=-1", want: `rate filter: limit "-1" is not a size (use e.g. 4096, 512K, 10M, 1G)`},
		{in: "rate:limit=", want: `rate filter: limit "" is not a size`},
		{in: "cow:keep=true", want: `cow filter: keep=true needs file=PATH`},
		{in: "cow:keep=maybe", want: `cow filter: keep "maybe" is not a boolean (use true or false)`},
		{in: "cow:block-size=1000", want: `cow filter: block-size "1000" is not a power of two from 512 to 1M`},
		{in: "cow:block-size=2M", want: `cow filter: block-size "2M" is not a power of two from 512 to 1M`},
		{in: "readonly:range=0-1M", want: `readonly filter: unknown key "range" (keys: file)`},
		{in: "log", want: `log filter: file=PATH is required`},
		{in: "log:append=true", want: `log filter: file=PATH is required`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, nil, want an error", tt.in, s)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Parse(%q) = %q, want it to start with %q", tt.in, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("Parse(%q) error has several lines: %q", tt.in, err)
			}
		})
	}
}

// FuzzFilterSpec: whatever parses renders as a spec that parses to the same
// Spec, and nothing panics.
func FuzzFilterSpec(f *testing.F) {
	for _, d := range Table {
		f.Add(d.Name)
		for _, o := range d.Options {
			f.Add(d.Name + ":" + o.Key + "=" + o.Default)
		}
	}
	for _, s := range []string{
		"error:rate=1,file=/tmp/error0", "error:rate=33.3%,seed=7,ops=read+trim,range=1M+4K,range=0-512",
		"delay:read=100,write=1.5s,jitter=3ms,after=1m", "rate:limit=10M/s,read-file=/x,burst=0",
		"cow:file=/var/tmp/ov,keep=on,block-size=64K", "protect:range=0-1M,file=/t", "log:file=a=b,append=no",
		"stats:interval=0", "error:rate=1e-3", "error:range=18446744073709551615-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(spec.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %q, but Parse(%q) = %v", s, spec, spec.String(), err)
		}
		if !reflect.DeepEqual(spec, again) {
			t.Fatalf("Parse(%q) = %#v, Parse(its String %q) = %#v", s, spec, spec.String(), again)
		}
		if _, err := argsOf(spec); err != nil {
			t.Fatalf("argsOf(Parse(%q)) = %v", s, err)
		}
	})
}

// TestHelp checks that the help text names every filter and every option
// with its default, from the table.
func TestHelp(t *testing.T) {
	h := Help()
	for _, d := range Table {
		if !strings.Contains(h, "  "+d.Name+": "+d.Summary) {
			t.Errorf("Help() does not introduce %s with its summary", d.Name)
		}
		if d.Doc == "" || d.Summary == "" {
			t.Errorf("filter %s has no Doc or Summary", d.Name)
		}
		for _, o := range d.Options {
			if !strings.Contains(h, o.Key+"="+o.Value) {
				t.Errorf("Help() does not mention %s's %s=%s", d.Name, o.Key, o.Value)
			}
			if o.Default != "" {
				if _, _, err := o.kind.parse(o.Default); err != nil {
					t.Errorf("%s %s: default %q does not parse: %v", d.Name, o.Key, o.Default, err)
				}
			}
		}
	}
	for i, line := range strings.Split(h, "\n") {
		if len(line) > 100 {
			t.Errorf("Help() line %d is %d characters long: %q", i+1, len(line), line)
		}
	}
}

func TestComplete(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{in: "", want: []string{"error:", "delay:", "rate:", "cow:", "protect:", "readonly:", "log:", "stats:"}},
		{in: "r", want: []string{"rate:", "readonly:"}},
		{in: "error:", want: []string{"error:after=", "error:error=", "error:file=", "error:ops=", "error:range=", "error:rate=", "error:seed="}},
		{in: "error:ra", want: []string{"error:range=", "error:rate="}},
		{in: "error:rate=1,", want: []string{"error:rate=1,after=", "error:rate=1,error=", "error:rate=1,file=", "error:rate=1,ops=", "error:rate=1,range=", "error:rate=1,seed="}},
		{in: "error:range=0-1,r", want: []string{"error:range=0-1,range=", "error:range=0-1,rate="}},
		{in: "error:error=EN", want: []string{"error:error=ENOSPC", "error:error=ENOMEM", "error:error=ENOTSUP"}},
		{in: "cow:keep=", want: []string{"cow:keep=true", "cow:keep=false"}},
		{in: "bogus:", want: nil},
		{in: "error:bogus=", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Complete(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Complete(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestIsolatesSource(t *testing.T) {
	parse := func(ss ...string) []Spec {
		var out []Spec
		for _, s := range ss {
			sp, err := Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, sp)
		}
		return out
	}
	if IsolatesSource(parse("error", "log:file=x")) {
		t.Error("IsolatesSource(error, log) = true, want false")
	}
	if !IsolatesSource(parse("error", "cow")) {
		t.Error("IsolatesSource(error, cow) = false, want true")
	}
}

func TestSpecAbsolute(t *testing.T) {
	tests := []struct{ in, want string }{
		{"log:file=x.jsonl", "log:file=/srv/x.jsonl"},
		{"log:file=/abs/x.jsonl", "log:file=/abs/x.jsonl"},
		{"error:file=../t/e0,rate=1", "error:file=/t/e0,rate=1"},
		{"cow", "cow"},
	}
	for _, tt := range tests {
		s, err := Parse(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Absolute("/srv").String(); got != tt.want {
			t.Errorf("Absolute(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
