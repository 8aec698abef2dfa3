package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// completionScript returns `nbdloop completion SHELL`, written to a file
// in dir.
func completionScript(t *testing.T, shell, dir string) (script, path string) {
	t.Helper()
	code, script, stderr := runArgs(t, "completion", shell)
	if code != 0 {
		t.Fatalf("completion %s: exit %d: %s", shell, code, stderr)
	}
	path = filepath.Join(dir, "nbdloop."+shell)
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return script, path
}

// completionDir makes a directory with files to complete (a.log, b.img,
// sub/) and a fake nbdloop whose list -n -O NAME prints two devices, so
// that the attached devices are completed without the kernel.
func completionDir(t *testing.T) (dir, fake string) {
	t.Helper()
	dir = t.TempDir()
	for _, f := range []string{"a.log", "b.img", "sub/c.img"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fake = filepath.Join(t.TempDir(), "nbdloop")
	prog := "#!/bin/sh\n[ \"$*\" = \"list -n -O NAME\" ] && printf '/dev/nbd3\\n/dev/nbd7\\n'\n"
	if err := os.WriteFile(fake, []byte(prog), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, fake
}

// appFlagNames are the names of every visible flag of a command of the
// app (cmd "": the program's own), as typed, with --help and -h.
func appFlagNames(t *testing.T, cmd string) []string {
	t.Helper()
	app := newApp(io.Discard, io.Discard)
	flags := app.Flags
	if cmd != "" {
		c := app.Command(cmd)
		if c == nil {
			t.Fatalf("no command %s", cmd)
		}
		flags = c.Flags
	}
	var out []string
	for _, f := range append(flags, cli.HelpFlag) {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		for _, n := range f.Names() {
			if !slices.Contains(out, dashed(n)) {
				out = append(out, dashed(n))
			}
		}
	}
	slices.Sort(out)
	return out
}

func appCommandNames() []string {
	var out []string
	for _, c := range newApp(io.Discard, io.Discard).VisibleCommands() {
		out = append(out, c.Name)
	}
	return out
}

// TestCompletionScriptsHaveDefinitions walks the app's commands and flags:
// each shell's script names every visible command, and each flag in the
// part of the script that completes its command.
func TestCompletionScriptsHaveDefinitions(t *testing.T) {
	// part returns the text of script that completes cmd ("": the program).
	tests := []struct {
		shell string
		part  func(script, cmd string) string
		flag  func(name string) string // a flag name as the part has it
	}{
		{"bash", func(s, cmd string) string {
			if cmd == "" {
				cmd = "''"
			}
			return between(s, "\n\t"+cmd+") flags=", "\n")
		}, func(n string) string { return dashed(n) }},
		{"zsh", func(s, cmd string) string {
			if cmd == "" {
				return between(s, "_arguments -C", "->command")
			}
			return between(s, "\n\t\t"+cmd+")\n", " ;;\n")
		}, func(n string) string { return dashed(n) }},
		{"fish", func(s, cmd string) string {
			var lines []string
			for _, l := range strings.Split(s, "\n") {
				if strings.Contains(l, "-n '__nbdloop_using "+cmd+"'") || cmd == "" && strings.Contains(l, `-n '__nbdloop_using \'\''`) {
					lines = append(lines, l)
				}
			}
			return strings.Join(lines, "\n")
		}, func(n string) string {
			if len(n) == 1 {
				return "-s " + n
			}
			return "-l " + n
		}},
	}
	app := newApp(io.Discard, io.Discard)
	for _, tt := range tests {
		t.Run(tt.shell, func(t *testing.T) {
			script, _ := completionScript(t, tt.shell, t.TempDir())
			for _, cmd := range append([]string{""}, appCommandNames()...) {
				part := tt.part(script, cmd)
				if part == "" {
					t.Errorf("no part of the %s script completes command %q", tt.shell, cmd)
					continue
				}
				flags := app.Flags
				if cmd != "" {
					flags = app.Command(cmd).Flags
				}
				for _, f := range append(flags, cli.HelpFlag) {
					for _, n := range f.Names() {
						if !regexp.MustCompile(`(^|[^-\w])` + regexp.QuoteMeta(tt.flag(n)) + `([^-\w]|$)`).MatchString(part) {
							t.Errorf("%s script: command %q lacks flag %s", tt.shell, cmd, dashed(n))
						}
					}
				}
			}
			for _, c := range app.Commands {
				offered := strings.Contains(script, c.Name)
				if c.Hidden && regexp.MustCompile(`\b`+c.Name+`\b`).MatchString(tt.part(script, "")) {
					t.Errorf("%s script offers the hidden command %s", tt.shell, c.Name)
				}
				if !c.Hidden && !offered {
					t.Errorf("%s script lacks command %s", tt.shell, c.Name)
				}
			}
		})
	}
}

// between returns the text of s after the first start up to end, "" if
// start is not in s.
func between(s, start, end string) string {
	_, after, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	part, _, _ := strings.Cut(after, end)
	return part
}

// TestCompletionValues: the values offered come from the definitions
// attach validates against.
func TestCompletionValues(t *testing.T) {
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"block sizes", blockSizes(), []string{"512", "1024", "2048", "4096"}},
		{"partition tables", tableKinds(), []string{"gpt", "mbr"}},
		{"attach --format", flagValue("attach", "format", "FORMAT").words, attach.FormatNames()},
		{"completion's operand", operandValue(completionCommand()).words, []string{"bash", "zsh", "fish"}},
	}
	for _, tt := range tests {
		if !slices.Equal(tt.got, tt.want) {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	app := newApp(io.Discard, io.Discard)
	for _, tt := range []struct {
		cmd  string
		want compKind
	}{
		{"attach", compSource}, {"detach", compAttached}, {"list", compAttached}, {"restart", compAttached},
		{"stats", compAttached}, {"top", compAttached}, {"pack", compFiles}, {"draw", compFiles}, {"completion", compWords},
	} {
		if got := operandValue(app.Command(tt.cmd)).kind; got != tt.want {
			t.Errorf("%s's operands complete as kind %d, want %d", tt.cmd, got, tt.want)
		}
	}
}

// TestBashCompletion calls the bash script's function as bash does, with
// COMP_WORDS split at : and = (COMP_WORDBREAKS) or not, in a directory
// with files, and checks COMPREPLY.
func TestBashCompletion(t *testing.T) {
	tooltest.Require(t, "bash")
	dir, fake := completionDir(t)
	_, path := completionScript(t, "bash", t.TempDir())
	tests := []struct {
		words []string // after the program; the last is the word completed
		want  []string // in any order
	}{
		{[]string{"att"}, []string{"attach"}},
		{[]string{"de"}, []string{"detach"}},
		{[]string{""}, appCommandNames()},
		{[]string{"attach", "--for"}, []string{"--foreground", "--format"}},
		{[]string{"attach", "--format", ""}, attach.FormatNames()},
		{[]string{"attach", "--format", "q"}, []string{"qcow2"}},
		{[]string{"attach", "--format", "="}, attach.FormatNames()},
		{[]string{"attach", "--format=x"}, []string{"--format=xz"}},
		{[]string{"attach", "-b", ""}, []string{"512", "1024", "2048", "4096"}},
		{[]string{"attach", "--table", ""}, []string{"gpt", "mbr"}},
		{[]string{"attach", "--direct-io", "=", ""}, []string{"on", "off"}},
		{[]string{"attach", "--device", "/dev/nbd"}, nbdDevices(t)},
		{[]string{"attach", ""}, []string{"a.log", "b.img", "sub/", "memory:", "exec:", "file:"}},
		{[]string{"attach", "disk.img", "-r", "m"}, []string{"memory:"}},
		{[]string{"attach", "disk.img", "--rea"}, []string{"--read-only"}},
		{[]string{"attach", "exec", ":", "s"}, []string{"sub/"}},
		{[]string{"attach", "file:sub/"}, []string{"file:sub/c.img"}},
		{[]string{"attach", "--", "-"}, nil},
		{[]string{"attach", "--filter", ""}, []string{"error:", "delay:", "rate:", "cow:", "protect:", "readonly:", "log:", "stats:"}},
		{[]string{"attach", "--filter", "log", ":", "file", "=", ""}, []string{"a.log", "b.img", "sub/"}},
		{[]string{"attach", "--filter", "log", ":", "file", "="}, []string{"a.log", "b.img", "sub/"}},
		{[]string{"attach", "--filter", "error", ":"}, []string{"after=", "error=", "file=", "ops=", "range=", "rate=", "seed="}},
		{[]string{"attach", "memory", ":"}, nil},
		{[]string{"attach", "--filter", "log:file=s"}, []string{"log:file=sub/"}},
		{[]string{"attach", "--filter", "error", ":", "ra"}, []string{"range=", "rate="}},
		{[]string{"attach", "--filter", "error", ":", "rate", "=", "1,f"}, []string{"1,file="}},
		{[]string{"attach", "--filter", "error", ":", "rate", "=", "1,r"}, []string{"1,range="}},
		{[]string{"attach", "--filter", "=", "error", ":", "error", "=", "EN"}, []string{"ENOSPC", "ENOMEM", "ENOTSUP"}},
		{[]string{"detach", ""}, []string{"/dev/nbd3", "/dev/nbd7"}},
		{[]string{"stats", "--json", "/dev/nbd7"}, []string{"/dev/nbd7"}},
		{[]string{"list", "-O", "NAME,S"}, []string{"NAME,SIZE", "NAME,SOURCE", "NAME,STATE", "NAME,SUPERVISOR"}},
		{[]string{"list", "--associated", "b"}, []string{"b.img"}},
		{[]string{"pack", "-o", ""}, []string{"a.log", "b.img", "sub/"}},
		{[]string{"pack", "--format", ""}, []string{"xz", "zstd"}},
		{[]string{"draw", "a"}, []string{"a.log"}},
		{[]string{"completion", ""}, []string{"bash", "zsh", "fish"}},
		{[]string{"-"}, appFlagNames(t, "")},
	}
	for _, cmd := range appCommandNames() {
		tests = append(tests, struct {
			words []string
			want  []string
		}{[]string{cmd, "-"}, appFlagNames(t, cmd)})
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.words, " "), func(t *testing.T) {
			words := []string{shQuote(fake)}
			for _, w := range tt.words {
				words = append(words, shQuote(w))
			}
			prog := "source " + shQuote(path) + "\n" +
				"COMP_WORDS=(" + strings.Join(words, " ") + "); COMP_CWORD=$((${#COMP_WORDS[@]}-1))\n" +
				"_nbdloop; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
			cmd := exec.Command("bash", "-c", prog)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			checkCandidates(t, string(out), tt.want)
		})
	}
}

// nbdDevices are the /dev/nbdN of this machine, as --device offers them.
func nbdDevices(t *testing.T) []string {
	t.Helper()
	paths, _ := filepath.Glob("/dev/nbd*")
	var out []string
	for _, p := range paths {
		if regexp.MustCompile(`^/dev/nbd[0-9]+$`).MatchString(p) {
			out = append(out, p)
		}
	}
	return out
}

// checkCandidates compares the lines of out, in any order, with want.
func checkCandidates(t *testing.T, out string, want []string) {
	t.Helper()
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" {
			got = append(got, l)
		}
	}
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("candidates = %q, want %q", got, want)
	}
}

// TestZshCompletion checks the zsh script's syntax, then completes command
// lines in an interactive zsh on a pseudo-terminal (zpty), recording what
// the completion functions add with compadd.
func TestZshCompletion(t *testing.T) {
	tooltest.Require(t, "zsh")
	dir, fake := completionDir(t)
	tmp := t.TempDir()
	_, path := completionScript(t, "zsh", tmp)
	if out, err := exec.Command("zsh", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	capture := filepath.Join(tmp, "capture.zsh")
	if err := os.WriteFile(capture, []byte(zshCapture), 0o644); err != nil {
		t.Fatal(err)
	}
	// zsh adds the suffix of a match (the / of a directory, the : of
	// memory:, the = of a key) when it is chosen: the matches lack it.
	tests := []struct {
		line string
		want []string
	}{
		{"nbdloop att", []string{"attach"}},
		{"nbdloop attach --for", []string{"--foreground", "--format"}},
		{"nbdloop attach --format ", attach.FormatNames()},
		{"nbdloop attach --format=g", []string{"--format=gzip"}},
		{"nbdloop attach -b ", []string{"512", "1024", "2048", "4096"}},
		{"nbdloop attach --table ", []string{"gpt", "mbr"}},
		{"nbdloop attach ", []string{"a.log", "b.img", "sub", "memory:", "exec:", "file:"}},
		{"nbdloop attach exec:s", []string{"exec:sub"}},
		{"nbdloop attach --filter ", []string{"error", "delay", "rate", "cow", "protect", "readonly", "log", "stats"}},
		{"nbdloop attach --filter log:file=", []string{"log:file=a.log", "log:file=b.img", "log:file=sub"}},
		{"nbdloop attach --filter error:rate=1,ra", []string{"error:rate=1,range", "error:rate=1,rate"}},
		{"nbdloop attach --filter=error:error=EN", []string{"--filter=error:error=ENOSPC", "--filter=error:error=ENOMEM", "--filter=error:error=ENOTSUP"}},
		{fake + " detach ", []string{"/dev/nbd3", "/dev/nbd7"}},
		{"nbdloop pack -o ", []string{"a.log", "b.img", "sub"}},
		{"nbdloop list -O NAME,S", []string{"NAME,SIZE", "NAME,SOURCE", "NAME,STATE", "NAME,SUPERVISOR"}},
		{"nbdloop completion ", []string{"bash", "zsh", "fish"}},
	}
	// One zsh completes every line: starting one costs a second.
	out := filepath.Join(tmp, "matches")
	args := []string{"-f", capture, path, out}
	for _, tt := range tests {
		args = append(args, tt.line)
	}
	cmd := exec.Command("zsh", args...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("zsh: %v\n%s", err, b)
	}
	for i, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			b, err := os.ReadFile(fmt.Sprintf("%s.%d", out, i+1))
			if err != nil {
				t.Fatal(err)
			}
			got, done := strings.CutSuffix(string(b), "END\n")
			if !done {
				t.Fatalf("the completion did not finish: %q", b)
			}
			checkCandidates(t, got, tt.want)
		})
	}
}

// zshCapture is run as zsh -f capture.zsh SCRIPT OUT LINE...: in an
// interactive zsh with SCRIPT loaded, it types each LINE and TAB, and
// writes to OUT.N (N counts the lines from 1) each match that completion
// adds, then END.
const zshCapture = `zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1=''; bindkey -e; autoload -U compinit; compinit -u -D; source ${(q)1}; integer _n=1"
zpty -w z 'compadd() {
	if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
	local -a hits; local h
	builtin compadd -A hits "$@"
	for h in $hits; do print -r -- "$IPREFIX$h" >> '${(q)2}'.$_n; done
	builtin compadd "$@"
}'
zpty -w z '_capture() { zle complete-word; print END >> '${(q)2}'.$_n; (( _n++ )); }; zle -N _capture; bindkey "^I" _capture'
zpty -w z "echo RE''ADY"
while zpty -r z line; do [[ $line == *READY* ]] && break; done
integer n i
for ((n = 1; n <= $# - 2; n++)); do
	zpty -w -n z "${@[n+2]}"$'\t'
	for ((i = 0; i < 300; i++)); do
		[[ -e $2.$n && "$(<$2.$n)" == *END* ]] && break
		sleep 0.05
	done
	zpty -w -n z $'\C-u'
done
zpty -d z
`

// TestFishCompletion checks the fish script's syntax, then asks fish for
// the candidates of command lines (complete -C).
func TestFishCompletion(t *testing.T) {
	tooltest.Require(t, "fish")
	dir, fake := completionDir(t)
	_, path := completionScript(t, "fish", t.TempDir())
	if out, err := exec.Command("fish", "--no-execute", path).CombinedOutput(); err != nil {
		t.Fatalf("fish --no-execute: %v\n%s", err, out)
	}
	tests := []struct {
		line string
		want []string
	}{
		{"nbdloop att", []string{"attach"}},
		{"nbdloop ", appCommandNames()},
		{"nbdloop attach --for", []string{"--foreground", "--format"}},
		{"nbdloop attach --format ", attach.FormatNames()},
		{"nbdloop attach --format=z", []string{"--format=zstd"}},
		{"nbdloop attach -b ", []string{"512", "1024", "2048", "4096"}},
		{"nbdloop attach --table ", []string{"gpt", "mbr"}},
		{"nbdloop attach ", []string{"a.log", "b.img", "sub/", "memory:", "exec:", "file:"}},
		{"nbdloop attach exec:s", []string{"exec:sub/"}},
		{"nbdloop attach --filter ", []string{"error:", "delay:", "rate:", "cow:", "protect:", "readonly:", "log:", "stats:"}},
		{"nbdloop attach --filter log:file=", []string{"log:file=a.log", "log:file=b.img", "log:file=sub/"}},
		{"nbdloop attach --filter error:rate=1,ra", []string{"error:rate=1,range=", "error:rate=1,rate="}},
		{"nbdloop attach --filter=error:error=EN", []string{"--filter=error:error=ENOSPC", "--filter=error:error=ENOMEM", "--filter=error:error=ENOTSUP"}},
		{fake + " detach ", []string{"/dev/nbd3", "/dev/nbd7"}},
		{"nbdloop pack -o ", []string{"a.log", "b.img", "sub/"}},
		{"nbdloop list -O NAME,S", []string{"NAME,SIZE", "NAME,SOURCE", "NAME,STATE", "NAME,SUPERVISOR"}},
		{"nbdloop completion ", []string{"bash", "zsh", "fish"}},
	}
	for _, cmd := range appCommandNames() {
		var long []string
		for _, f := range appFlagNames(t, cmd) {
			if strings.HasPrefix(f, "--") {
				long = append(long, f)
			}
		}
		tests = append(tests, struct {
			line string
			want []string
		}{"nbdloop " + cmd + " --", long})
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			cmd := exec.Command("fish", "--no-config", "-c", "source "+fishQuote(path)+"; complete -C "+fishQuote(tt.line))
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("fish: %v\n%s", err, out)
			}
			var got []string
			for _, l := range strings.Split(string(out), "\n") {
				if c, _, _ := strings.Cut(l, "\t"); c != "" {
					got = append(got, c)
				}
			}
			checkCandidates(t, strings.Join(got, "\n"), tt.want)
		})
	}
}
