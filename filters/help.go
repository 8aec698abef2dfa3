package filters

import (
	"fmt"
	"sort"
	"strings"
)

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
