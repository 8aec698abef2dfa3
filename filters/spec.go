package filters

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
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

// IsolatesSource reports whether a filter in specs keeps every write away
// from the source (cow does), so the source can be opened read-only.
func IsolatesSource(specs []Spec) bool {
	for _, s := range specs {
		if d := Lookup(s.Name); d != nil && d.isolates {
			return true
		}
	}
	return false
}

// DiesWithServer says what of a device with the filters of specs lives only
// in its server process, so that a new server after a crash would serve it
// wrong, or "" when nothing does.
func DiesWithServer(specs []Spec) string {
	for _, s := range specs {
		if d := Lookup(s.Name); d != nil && d.diesWithServer != "" {
			return d.diesWithServer
		}
	}
	return ""
}
