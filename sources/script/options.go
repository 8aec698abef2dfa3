package script

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout bounds every call of the program (every request in
// persistent mode) unless timeout= says otherwise: long enough for a slow
// script under load, short enough that the kernel sees an error before the
// user gives up.
const DefaultTimeout = 30 * time.Second

// MaxTimeout is the largest timeout= accepted.
const MaxTimeout = 24 * time.Hour

// Options say how to run the program.
type Options struct {
	// Persistent starts the program once and talks to it over its stdin
	// and stdout (see the package documentation).
	Persistent bool
	// Timeout bounds each call; 0 means DefaultTimeout.
	Timeout time.Duration
	// Params are the KEY=VALUE (and bare VALUE) options in the order
	// given: config calls in nbdkit mode, arguments in persistent mode.
	Params []Param
	// ReadOnly serves the device read-only whatever can_write says; the
	// program's open method is told so.
	ReadOnly bool
	// Logf receives the stderr lines of a persistent program and notes
	// about restarts; nil writes them to the standard logger.
	Logf func(format string, args ...any)
	// Env names the variables of nbdloop's own environment that the
	// program gets besides the minimal one (env=NAME items; see Open).
	Env []string
}

// Param is one KEY=VALUE option; Key is "" for a bare VALUE (nbdkit's
// magic config key).
type Param struct {
	Key, Value string
}

func (p Param) String() string {
	if p.Key == "" {
		return p.Value
	}
	return p.Key + "=" + p.Value
}

// ParseOptions parses the comma-separated options that follow the path in
// `exec:PATH,OPTIONS`: persistent, timeout=DURATION and KEY=VALUE items
// for the program. Values cannot contain commas. The empty string gives
// the defaults.
func ParseOptions(s string) (Options, error) {
	var o Options
	if s == "" {
		return o, nil
	}
	timeoutSet := false
	for _, item := range strings.Split(s, ",") {
		key, value, hasValue := strings.Cut(item, "=")
		switch {
		case item == "":
			return Options{}, errors.New("empty option (options are separated by single commas)")
		case item == "persistent":
			if o.Persistent {
				return Options{}, errors.New("persistent given twice")
			}
			o.Persistent = true
		case key == "timeout" && hasValue:
			if timeoutSet {
				return Options{}, errors.New("timeout given twice")
			}
			d, err := parseTimeout(value)
			if err != nil {
				return Options{}, err
			}
			o.Timeout, timeoutSet = d, true
		case key == "env" && hasValue:
			if !validEnvName(value) {
				return Options{}, fmt.Errorf("env=%s: not a variable name (letters, digits and '_', not starting with a digit)", value)
			}
			o.Env = append(o.Env, value)
		case !hasValue:
			o.Params = append(o.Params, Param{Value: item})
		case !validKey(key):
			return Options{}, fmt.Errorf("%q: key must be letters, digits, '_', '-' or '.', starting with a letter or '_'", item)
		default:
			o.Params = append(o.Params, Param{Key: key, Value: value})
		}
	}
	return o, nil
}

// parseTimeout reads a Go duration (10s, 1m30s) or a number of seconds.
func parseTimeout(s string) (time.Duration, error) {
	var d time.Duration
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("timeout=%s: not a duration (e.g. timeout=10s)", s)
	}
	if d <= 0 || d > MaxTimeout {
		return 0, fmt.Errorf("timeout=%s: must be more than 0 and at most %v", s, MaxTimeout)
	}
	return d, nil
}

// validEnvName accepts a shell variable name.
func validEnvName(k string) bool {
	for i, c := range k {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return k != ""
}

// validKey accepts the config keys nbdkit accepts: a letter or '_', then
// letters, digits, '_', '-' and '.'.
func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// String renders the options in the form ParseOptions reads (ReadOnly and
// Logf are not part of it).
func (o Options) String() string {
	var items []string
	if o.Persistent {
		items = append(items, "persistent")
	}
	if o.Timeout != 0 {
		items = append(items, "timeout="+o.Timeout.String())
	}
	for _, p := range o.Params {
		items = append(items, p.String())
	}
	return strings.Join(items, ",")
}

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return DefaultTimeout
	}
	return o.Timeout
}
