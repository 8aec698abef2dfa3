package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Options anywhere. urfave/cli, like Go's flag package, stops reading
// options at the first operand, so `nbdloop attach disk.img -r` would take
// -r for a second SOURCE. getopt tools (losetup among them) permute
// instead: every option is read wherever it stands, and `--` ends the
// options. permuteArgs does that permutation before cli parses.

// completionFlag is what the shell completion script appends; such a
// command line is left as typed (cli treats the word before it, and "--",
// specially).
const completionFlag = "--generate-bash-completion"

// permuteArgs returns the command line (args[0] is the program) with the
// options of its command moved in front of the command's operands, in the
// order given. The options before the command are the program's own and stay
// where they are; a command line without a known command is returned as it
// is.
func permuteArgs(app *cli.App, args []string) []string {
	if len(args) == 0 || args[len(args)-1] == completionFlag {
		return args
	}
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return args
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			continue // the program's options take no values
		}
		cmd := app.Command(a)
		if cmd == nil {
			return args
		}
		out := append([]string(nil), args[:i+1]...)
		return append(out, permute(args[i+1:], cmd.Flags)...)
	}
	return args
}

// permute moves the options in args in front of the operands, keeping
// each option's value (the next word, for an option that takes one and is
// not written --name=value) with it. Words after "--" are operands. If an
// operand starts with "-", a "--" is put before the operands so that it
// stays one. Unknown options move too, and cli reports them; an option
// whose value is missing at the end is put last, without the operands, so
// that cli reports it. --help (-h) comes alone: it shows the command's help
// whatever else is given.
func permute(args []string, flags []cli.Flag) []string {
	var opts, operands []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			operands = append(operands, args[i+1:]...)
			i = len(args)
		case a == "-" || !strings.HasPrefix(a, "-"):
			operands = append(operands, a)
		case a == "-h" || a == "--help":
			// cli's help takes an operand for a command to show help on.
			return []string{a}
		default:
			if words, ok := expandShort(a, flags); ok {
				// -rP is -r -P; -o1G is -o 1G: the words go through again.
				args = append(append(append([]string(nil), args[:i]...), words...), args[i+1:]...)
				i--
				continue
			}
			opts = append(opts, a)
			name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !hasValue && takesValue(flags, name) {
				if i+1 == len(args) {
					// The value is missing: the option goes last, so that
					// cli says so rather than take an operand for it.
					return opts
				}
				i++
				opts = append(opts, args[i])
			}
		}
	}
	for _, o := range operands {
		if strings.HasPrefix(o, "-") && o != "-" {
			return append(append(opts, "--"), operands...)
		}
	}
	return append(opts, operands...)
}

// expandShort splits a word of bundled one-letter options, as getopt
// reads them: -rP is -r -P, and a letter that takes a value takes the rest
// of the word (-o1G is -o 1G) or, at the end, the next word. A word that is
// an option's name itself (-json: urfave/cli takes long names after one
// dash), or holds a letter that is no option, is not split.
func expandShort(a string, flags []cli.Flag) ([]string, bool) {
	if len(a) < 3 || a[0] != '-' || a[1] == '-' || strings.Contains(a, "=") || isFlag(flags, a[1:]) {
		return nil, false
	}
	var words []string
	for i := 1; i < len(a); i++ {
		name := a[i : i+1]
		if !isFlag(flags, name) {
			return nil, false
		}
		words = append(words, "-"+name)
		if takesValue(flags, name) {
			if i+1 < len(a) {
				words = append(words, a[i+1:])
			}
			return words, true
		}
	}
	return words, true
}

// isFlag reports whether one of flags is called name.
func isFlag(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// takesValue reports whether the flag called name reads the next word as
// its value (booleans, and flags whose value is optional, do not).
func takesValue(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if v, ok := f.(interface{ TakesValue() bool }); ok {
				return v.TakesValue()
			}
			return true
		}
	}
	return false
}
