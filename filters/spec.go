package filters

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
)

// Spec is a parsed --filter argument: NAME, or NAME:KEY=VALUE,KEY=VALUE...
// Parse checks the name, every key and every value, and keeps the values in
// canonical form (sizes in bytes, durations as Go writes them, ...), so that
// String gives back a spec that parses to the same Spec.
type Spec struct {
	Name   string
	Params []Param // in the order given; repeatable keys appear once per value
}

// Param is one KEY=VALUE of a Spec, VALUE in canonical form.
type Param struct {
	Key   string
	Value string
}

// String renders the spec in the form Parse reads.
func (s Spec) String() string {
	if len(s.Params) == 0 {
		return s.Name
	}
	var b strings.Builder
	b.WriteString(s.Name)
	for i, p := range s.Params {
		if i == 0 {
			b.WriteByte(':')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(p.Value)
	}
	return b.String()
}

// Absolute returns the spec with every file name in it (the values of
// options that name files) made absolute against dir, so that it names the
// same files wherever the server later runs from.
func (s Spec) Absolute(dir string) Spec {
	d := Lookup(s.Name)
	out := Spec{Name: s.Name, Params: slices.Clone(s.Params)}
	for i, p := range out.Params {
		if o := d.optionOf(p.Key); o != nil && o.kind.path && p.Value != "" && !filepath.IsAbs(p.Value) {
			out.Params[i].Value = filepath.Join(dir, p.Value)
		}
	}
	return out
}

// Def describes one filter: the single source of its name, help text and
// options for the spec parser, --help, the man page, bash completion and
// the "unknown key" errors.
type Def struct {
	Name    string
	Summary string // one line, lowercase, no period
	Doc     string // what it serves, when to use it, limits
	Options []Option

	// check, when set, validates combinations of keys.
	check func(a args) error
	open  func(next sources.Source, a args, env Env) (sources.Source, error)
}

// Option is one KEY=VALUE a filter accepts.
type Option struct {
	Key     string
	Value   string // placeholder shown in help: MS, BYTES, PATH, ...
	Default string // shown in help; "" when the option has no default
	Help    string
	Repeat  bool // may be given more than once
	Require bool // must be given

	kind kind
}

// kind parses one type of value and renders it in canonical form.
type kind struct {
	parse func(s string) (any, string, error)
	path  bool // the value is a file name
}

// Table lists every filter, in the order --help shows them.
var Table []*Def

func init() {
	Table = []*Def{errorDef, delayDef, rateDef, cowDef, protectDef, readonlyDef, logDef, statsDef}
}

// Lookup returns the filter called name, or nil.
func Lookup(name string) *Def {
	for _, d := range Table {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func names() string {
	n := make([]string, len(Table))
	for i, d := range Table {
		n[i] = d.Name
	}
	return strings.Join(n, ", ")
}

func (d *Def) option(key string) *Option {
	for i := range d.Options {
		if d.Options[i].Key == key {
			return &d.Options[i]
		}
	}
	return nil
}

// optionOf is option for a Def that may be nil.
func (d *Def) optionOf(key string) *Option {
	if d == nil {
		return nil
	}
	return d.option(key)
}

func (d *Def) keys() string {
	k := make([]string, len(d.Options))
	for i, o := range d.Options {
		k[i] = o.Key
	}
	return strings.Join(k, ", ")
}

// Parse parses a --filter argument. Errors name the filter, the key and the
// value, and say what is allowed:
//
//	error filter: rate "1.5" is out of range 0..1 or 0%..100%
func Parse(s string) (Spec, error) {
	name, rest, hasParams := strings.Cut(s, ":")
	if name == "" {
		return Spec{}, fmt.Errorf("--filter %q: no filter name (use one of %s)", s, names())
	}
	d := Lookup(name)
	if d == nil {
		return Spec{}, fmt.Errorf("unknown filter %q (use one of %s)", name, names())
	}
	spec := Spec{Name: name}
	a := args{def: d}
	if hasParams && rest != "" {
		for _, kv := range strings.Split(rest, ",") {
			key, val, ok := strings.Cut(kv, "=")
			if !ok || key == "" {
				return Spec{}, fmt.Errorf("%s filter: %q is not KEY=VALUE (keys: %s)", name, kv, d.keys())
			}
			o := d.option(key)
			if o == nil {
				return Spec{}, fmt.Errorf("%s filter: unknown key %q (keys: %s)", name, key, d.keys())
			}
			if !o.Repeat && a.has(key) {
				return Spec{}, fmt.Errorf("%s filter: %s given twice", name, key)
			}
			v, canon, err := o.kind.parse(val)
			if err != nil {
				return Spec{}, fmt.Errorf("%s filter: %s %q %v", name, key, val, err)
			}
			spec.Params = append(spec.Params, Param{Key: key, Value: canon})
			a.keys = append(a.keys, key)
			a.vals = append(a.vals, v)
		}
	}
	for _, o := range d.Options {
		if o.Require && !a.has(o.Key) {
			return Spec{}, fmt.Errorf("%s filter: %s=%s is required", name, o.Key, o.Value)
		}
	}
	if d.check != nil {
		if err := d.check(a); err != nil {
			return Spec{}, fmt.Errorf("%s filter: %w", name, err)
		}
	}
	return spec, nil
}

// args are a parsed spec's values, typed, for the filters' constructors.
type args struct {
	def  *Def
	keys []string
	vals []any
}

func argsOf(spec Spec) (args, error) {
	d := Lookup(spec.Name)
	if d == nil {
		return args{}, fmt.Errorf("unknown filter %q (use one of %s)", spec.Name, names())
	}
	a := args{def: d}
	for _, p := range spec.Params {
		o := d.option(p.Key)
		if o == nil {
			return args{}, fmt.Errorf("%s filter: unknown key %q (keys: %s)", spec.Name, p.Key, d.keys())
		}
		v, _, err := o.kind.parse(p.Value)
		if err != nil {
			return args{}, fmt.Errorf("%s filter: %s %q %v", spec.Name, p.Key, p.Value, err)
		}
		a.keys = append(a.keys, p.Key)
		a.vals = append(a.vals, v)
	}
	return a, nil
}

func (a args) has(key string) bool { return slices.Contains(a.keys, key) }

// get returns the last value given for key, or its default, or nil.
func (a args) get(key string) any {
	for i := len(a.keys) - 1; i >= 0; i-- {
		if a.keys[i] == key {
			return a.vals[i]
		}
	}
	o := a.def.option(key)
	if o == nil {
		panic("filters: " + a.def.Name + " has no option " + key)
	}
	if o.Default == "" {
		return nil
	}
	v, _, err := o.kind.parse(o.Default)
	if err != nil {
		panic("filters: bad default for " + a.def.Name + " " + key + ": " + err.Error())
	}
	return v
}

// all returns every value given for a repeatable key.
func (a args) all(key string) []any {
	var out []any
	for i, k := range a.keys {
		if k == key {
			out = append(out, a.vals[i])
		}
	}
	return out
}

func (a args) duration(key string) time.Duration {
	v, _ := a.get(key).(time.Duration)
	return v
}

func (a args) str(key string) string {
	v, _ := a.get(key).(string)
	return v
}

func (a args) int64(key string) int64 {
	v, _ := a.get(key).(int64)
	return v
}

func (a args) uint64(key string) uint64 {
	v, _ := a.get(key).(uint64)
	return v
}

func (a args) bool(key string) bool {
	v, _ := a.get(key).(bool)
	return v
}

func (a args) ranges(key string) []Range {
	var out []Range
	for _, v := range a.all(key) {
		out = append(out, v.(Range))
	}
	return out
}

// IsolatesSource reports whether a filter in specs keeps every write away
// from the source (cow does), so the source can be opened read-only.
func IsolatesSource(specs []Spec) bool {
	for _, s := range specs {
		if s.Name == cowDef.Name {
			return true
		}
	}
	return false
}

// The kinds of values.

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
		op, ok := opByName(name)
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

// Help renders the FILTERS section of `attach --help` and the man page from
// Table.
func Help() string {
	var b strings.Builder
	b.WriteString(`FILTERS: --filter NAME[:KEY=VALUE,...] wraps SOURCE in a filter. It may be
repeated; the filters stack in the order given, the first one nearest the
kernel (as nbdkit's --filter). Values: MS is milliseconds or a number with a
unit (100, 100ms, 1.5s, 2m); BYTES is a SIZE, with the same suffixes (4096,
512K, 1MiB; 1MB is 1000000); RANGE is START-END (END exclusive) or
START+LENGTH in BYTES; OPS joins read, write, flush, trim and zero with + (or
all); a PATH cannot contain a comma and is relative to the directory attach
runs in. Options marked [+] may be repeated.
`)
	for _, d := range Table {
		fmt.Fprintf(&b, "\n  %s: %s\n", d.Name, d.Summary)
		for _, line := range wrapText(d.Doc, 72) {
			fmt.Fprintf(&b, "    %s\n", line)
		}
		for _, o := range d.Options {
			head := fmt.Sprintf("%s=%s", o.Key, o.Value)
			if o.Repeat {
				head += " [+]"
			}
			text := o.Help
			switch {
			case o.Require:
				text += " (required)"
			case o.Default != "":
				text += " (default " + o.Default + ")"
			}
			lines := wrapText(text, 72-24)
			for i, line := range lines {
				if i == 0 {
					fmt.Fprintf(&b, "    %-22s  %s\n", head, line)
				} else {
					fmt.Fprintf(&b, "    %-22s  %s\n", "", line)
				}
			}
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func wrapText(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// Complete returns the completions of a partly typed --filter value: filter
// names followed by ":", then KEY= for the keys not given yet, then the
// values of keys that take a word (errors, booleans, ops). Each candidate is
// the whole value, prefix included.
func Complete(prefix string) []string {
	name, rest, hasColon := strings.Cut(prefix, ":")
	var out []string
	if !hasColon {
		for _, d := range Table {
			if strings.HasPrefix(d.Name, name) {
				out = append(out, d.Name+":")
			}
		}
		return out
	}
	d := Lookup(name)
	if d == nil {
		return nil
	}
	done := ""
	seg := rest
	if i := strings.LastIndexByte(rest, ','); i >= 0 {
		done, seg = rest[:i+1], rest[i+1:]
	}
	given := map[string]bool{}
	for _, kv := range strings.Split(done, ",") {
		k, _, _ := strings.Cut(kv, "=")
		given[k] = true
	}
	head := name + ":" + done
	if key, val, ok := strings.Cut(seg, "="); ok {
		o := d.option(key)
		if o == nil {
			return nil
		}
		var words []string
		switch o.Value {
		case "ERRNO":
			for _, e := range errnos {
				words = append(words, e.name)
			}
		case "BOOL":
			words = []string{"true", "false"}
		case "OPS":
			words = []string{"all", "read", "write", "flush", "trim", "zero"}
		}
		for _, w := range words {
			if strings.HasPrefix(w, val) {
				out = append(out, head+key+"="+w)
			}
		}
		return out
	}
	for _, o := range d.Options {
		if (!given[o.Key] || o.Repeat) && strings.HasPrefix(o.Key, seg) {
			out = append(out, head+o.Key+"=")
		}
	}
	sort.Strings(out)
	return out
}
