package main

import (
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/pack"
)

// `nbdloop completion SHELL` prints a completion script generated from the
// app's own definitions: its commands, their flags (names, aliases, usage,
// whether they take a value) and the placeholders of their usage texts,
// which say what a value or an operand is (completionHelp). A new command
// or flag is in the next generated script without any edit here.

// completionShell is a shell a script is generated for.
type completionShell struct {
	name  string
	write func(w io.Writer, s *compSpec) error
}

// completionShells are the shells, in the order the usage text names them.
func completionShells() []completionShell {
	return []completionShell{
		{"bash", writeBashCompletion},
		{"zsh", writeZshCompletion},
		{"fish", writeFishCompletion},
	}
}

func completionCommand() *cli.Command {
	shells := completionShells()
	var names []string
	for _, sh := range shells {
		names = append(names, sh.name)
	}
	return &cli.Command{
		Name:        "completion",
		Usage:       "print the completion script of a shell: " + strings.Join(names, ", "),
		UsageText:   "nbdloop completion " + strings.Join(names, "|"),
		Description: completionHelp,
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("completion: %v (see nbdloop completion --help)", err)
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("completion: one SHELL expected (%s)", strings.Join(names, ", "))
			}
			for _, sh := range shells {
				if sh.name == c.Args().First() {
					return sh.write(c.App.Writer, newCompSpec(c.App))
				}
			}
			return usageError("completion: %s: unknown shell (use %s)", c.Args().First(), strings.Join(names, ", "))
		},
	}
}

// compKind is what a flag's value or a command's operand completes to.
type compKind int

const (
	compNone     compKind = iota // free text: nothing to offer
	compWords                    // one of compValue.words
	compList                     // comma-separated compValue.words
	compFiles                    // file names
	compDirs                     // directory names
	compDevices                  // every /dev/nbdN
	compAttached                 // the devices nbdloop list shows
	compSource                   // a SOURCE: file names and the memory:, exec:, file: prefixes
	compFilter                   // a --filter spec
)

type compValue struct {
	kind  compKind
	words []string
	name  string // the placeholder: FORMAT, SOURCE, ...
}

// compFlag is one flag: its names without dashes, the name first.
type compFlag struct {
	names  []string
	usage  string // one line, no placeholder quotes
	value  *compValue
	opt    []string // the values of an optional =VALUE (--direct-io[=on|off])
	repeat bool     // may be given more than once
}

func (f compFlag) takesValue() bool { return f.value != nil }

type compCommand struct {
	name    string
	aliases []string
	usage   string
	flags   []compFlag
	operand compValue
}

// compFilterDef is one filter of --filter with its options.
type compFilterDef struct {
	name, summary string
	options       []compFilterOption
}

type compFilterOption struct {
	key, help string
	files     bool     // the value is a path
	words     []string // the values to offer
	repeat    bool
}

// compSpec is everything a script completes, read from the app.
type compSpec struct {
	prog     string
	flags    []compFlag // the program's own
	commands []compCommand
	filters  []compFilterDef
}

// newCompSpec reads the visible commands and flags of app.
func newCompSpec(app *cli.App) *compSpec {
	s := &compSpec{prog: app.Name, flags: compFlags("", app.Flags, app.HideHelp)}
	for _, c := range app.VisibleCommands() {
		cc := compCommand{name: c.Name, aliases: c.Aliases, usage: oneLineUsage(c.Usage), flags: compFlags(c.Name, c.Flags, c.HideHelp)}
		cc.operand = operandValue(c)
		s.commands = append(s.commands, cc)
	}
	for _, d := range filters.Table {
		f := compFilterDef{name: d.Name, summary: d.Summary}
		for _, o := range d.Options {
			opt := compFilterOption{key: o.Key, help: oneLineUsage(o.Help), files: o.Value == "PATH", repeat: o.Repeat}
			head := d.Name + ":" + o.Key + "="
			for _, w := range filters.Complete(head) {
				opt.words = append(opt.words, strings.TrimPrefix(w, head))
			}
			f.options = append(f.options, opt)
		}
		s.filters = append(s.filters, f)
	}
	return s
}

// compFlags returns the visible flags, with --help unless hideHelp.
func compFlags(cmd string, flags []cli.Flag, hideHelp bool) []compFlag {
	var out []compFlag
	hasHelp := false
	for _, f := range flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		if slices.Contains(f.Names(), "help") {
			hasHelp = true
		}
		out = append(out, newCompFlag(cmd, f))
	}
	if !hideHelp && !hasHelp {
		out = append(out, newCompFlag(cmd, cli.HelpFlag))
	}
	return out
}

func newCompFlag(cmd string, f cli.Flag) compFlag {
	cf := compFlag{names: f.Names()}
	d, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return cf
	}
	placeholder := usagePlaceholder(d.GetUsage())
	usage := strings.ReplaceAll(d.GetUsage(), "`", "")
	cf.usage = oneLineUsage(usage)
	if m, ok := f.(cli.DocGenerationSliceFlag); ok && m.IsSliceFlag() {
		cf.repeat = true
	}
	cf.repeat = cf.repeat || strings.Contains(usage, "(repeatable")
	if o, ok := f.(interface{ OptionalValue() string }); ok {
		// "[=on|off]"
		cf.opt = strings.Split(strings.Trim(o.OptionalValue(), "[=]"), "|")
	}
	if !d.TakesValue() {
		return cf
	}
	v := flagValue(cmd, cf.names[0], placeholder)
	if v.name = placeholder; v.name == "" {
		v.name = "VALUE"
	}
	cf.value = &v
	return cf
}

// flagValue says what the value of cmd's flag called name completes to:
// the values attach and pack define for the flags that take one of a few,
// otherwise what the placeholder of its usage names.
func flagValue(cmd, name, placeholder string) compValue {
	switch cmd + " --" + name {
	case "attach --format":
		return compValue{kind: compWords, words: attach.FormatNames()}
	case "attach --block-size":
		return compValue{kind: compWords, words: blockSizes()}
	case "attach --table":
		return compValue{kind: compWords, words: tableKinds()}
	case "attach --filter":
		return compValue{kind: compFilter}
	case "pack --format":
		return compValue{kind: compWords, words: []string{pack.XZ, pack.Zstd}}
	}
	return placeholderValue(placeholder)
}

// placeholderValue says what a usage placeholder (`FILE`, SOURCE,
// OUT.xz, ...) completes to.
func placeholderValue(p string) compValue {
	p = strings.TrimSuffix(strings.Trim(p, "[]"), "...")
	if lower := strings.ToLower(p); lower == p && strings.Contains(p, "|") {
		return compValue{kind: compWords, words: strings.Split(p, "|"), name: p} // bash|zsh|fish
	}
	p, _, _ = strings.Cut(p, "|") // IMAGE|-: its first form
	if p != "/dev/nbdN" {
		p, _, _ = strings.Cut(p, ".") // OUT.xz
	}
	v := placeholderKind(p)
	v.name = p
	return v
}

func placeholderKind(p string) compValue {
	switch p {
	case "FILE", "PATH", "IMAGE", "LOG", "OUT":
		return compValue{kind: compFiles}
	case "DIR":
		return compValue{kind: compDirs}
	case "SOURCE":
		return compValue{kind: compSource}
	case "DEVICE":
		return compValue{kind: compAttached}
	case "/dev/nbdN":
		return compValue{kind: compDevices}
	case "COLUMNS":
		var names []string
		for _, c := range listColumns {
			names = append(names, c.name)
		}
		return compValue{kind: compList, words: names}
	}
	return compValue{}
}

// operandValue reads what c's operands are from the first line of its
// usage text: the first word after the command's name that is neither an
// option, an option's value nor "[options]".
func operandValue(c *cli.Command) compValue {
	line, _, _ := strings.Cut(strings.TrimSpace(c.UsageText), "\n")
	words := strings.Fields(line)
	for i := 0; i < len(words); i++ {
		w := strings.Trim(words[i], "[]")
		switch {
		case i < 2 && (w == "nbdloop" || w == c.Name), w == "options", w == "|":
		case strings.HasPrefix(w, "-"):
			if name, _, eq := strings.Cut(strings.TrimLeft(w, "-"), "="); !eq && takesValue(c.Flags, name) {
				i++
			}
		default:
			return placeholderValue(w)
		}
	}
	return compValue{}
}

// blockSizes are the powers of two that attach takes as --block-size.
func blockSizes() []string {
	var out []string
	for n := int64(1); n <= 1<<20; n <<= 1 {
		cfg := attach.NewConfig("memory:1G")
		cfg.BlockSize = n
		if cfg.Validate() == nil {
			out = append(out, strconv.FormatInt(n, 10))
		}
	}
	return out
}

// tableKinds are the words of --table's usage that attach takes as a
// partition table (gpt, mbr).
func tableKinds() []string {
	var out []string
	d, _ := tableFlag().(cli.DocGenerationFlag)
	if d == nil {
		return nil
	}
	for _, w := range strings.FieldsFunc(d.GetUsage(), func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9') }) {
		cfg := attach.NewConfig("memory:1G")
		cfg.Composite = attach.Composite{Layout: attach.LayoutPartitions, Sources: []string{cfg.Source}, Table: w}
		if cfg.Validate() == nil && !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out
}

// oneLineUsage shortens a usage text to what a completion menu shows: its
// first clause.
func oneLineUsage(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	for _, sep := range []string{"; ", " ("} {
		if i := strings.Index(s, sep); i > 0 {
			s = s[:i]
		}
	}
	return s
}

// dashed returns a flag name as typed: -x or --name.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}
