package filters

import (
	"strings"

	"github.com/nbdloop/nbdloop/sources"
)

// Def describes one filter: the single source of its name, help text and
// options for the spec parser, --help, the man page, bash completion and
// the "unknown key" errors.
type Def struct {
	Name    string
	Summary string // one line, lowercase, no period
	Doc     string // what it serves, when to use it, limits
	Options []Option

	// isolates: the filter keeps every write away from the source, so
	// the source can be opened read-only.
	isolates bool
	// diesWithServer says what of the device lives only in the server
	// process, so that a new server after a crash would serve it wrong
	// ("": nothing).
	diesWithServer string

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
