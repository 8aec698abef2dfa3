package filters

import (
	"fmt"
	"slices"
	"time"
)

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
