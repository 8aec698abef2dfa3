package main

import (
	"errors"
	"strings"

	"github.com/urfave/cli/v2"
)

// Switches written as losetup writes --direct-io[=on|off]: the option
// alone means on, and a value, when given, follows an "=" (never the next
// word, so `--direct-io disk.img` stays an option and a SOURCE).

// onOff is a switch's value.
type onOff bool

func (v *onOff) Set(s string) error {
	switch strings.ToLower(s) {
	case "on", "true": // the flag package passes "true" for the option alone
		*v = true
	case "off", "false":
		*v = false
	default:
		return errors.New("use on or off")
	}
	return nil
}

func (v *onOff) String() string {
	if v != nil && bool(*v) {
		return "on"
	}
	return "off"
}

// IsBoolFlag makes the flag package accept the option without a value.
func (v *onOff) IsBoolFlag() bool { return true }

// onOffFlag is a cli flag for a switch: it takes no separate value (for
// permuteArgs and the man page), and --help shows it as NAME[=on|off].
type onOffFlag struct{ *cli.GenericFlag }

func newOnOffFlag(name, usage string) *onOffFlag {
	return &onOffFlag{&cli.GenericFlag{Name: name, Value: new(onOff), Usage: usage}}
}

func (f *onOffFlag) TakesValue() bool { return false }

// OptionalValue is what the option's name is followed by in --help and
// the man page.
func (f *onOffFlag) OptionalValue() string { return "[=on|off]" }

func (f *onOffFlag) String() string {
	s := cli.FlagStringer(f)
	if names, usage, ok := strings.Cut(s, "\t"); ok {
		return names + f.OptionalValue() + "\t" + usage
	}
	return s
}

// switchOn reports whether the switch called name is on.
func switchOn(c *cli.Context, name string) bool {
	v, ok := c.Generic(name).(*onOff)
	return ok && bool(*v)
}
