package kerneltest

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestDepsInstalled holds scripts/install-deps.sh against the external
// commands that the tests and `make demo` run: every command named in a test
// file (exec.Command, exec.LookPath, the run/must/sh helpers, shell scripts
// given to sh -c) or in the scripts that make check and make demo run must
// be checked by install-deps.sh, or be one of the commands every Debian
// system has (essentialCommands). A machine that had a tool from earlier
// work would otherwise hide a missing install step until a fresh clone fails.
func TestDepsInstalled(t *testing.T) {
	root := repoRoot(t)
	installed := installedCommands(t, filepath.Join(root, "scripts", "install-deps.sh"))
	essential := map[string]bool{}
	for _, c := range essentialCommands() {
		essential[c] = true
	}
	used := map[string][]string{} // command -> where
	add := func(cmd, where string) {
		cmd = filepath.Base(cmd)
		if cmd == "" || cmd == "." || cmd == "/" {
			return
		}
		used[cmd] = append(used[cmd], where)
	}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case ".git", ".cache", "bin", "bench-results", filepath.Join("scripts", "bench"):
				// scripts/bench has its own deps script (make bench).
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.HasSuffix(path, "_test.go"):
			for _, c := range goTestCommands(t, path) {
				add(c.name, rel+":"+strconv.Itoa(c.line))
			}
		case strings.HasPrefix(rel, "scripts"+string(filepath.Separator)):
			if strings.HasPrefix(rel, filepath.Join("scripts", "vm")) {
				return nil // the harness installs its own (setup.sh)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if interp := shebang(string(b)); interp != "" {
				add(interp, rel)
			}
			if strings.HasSuffix(path, ".sh") {
				for _, c := range shellCommands(string(b)) {
					add(c, rel)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for cmd, where := range used {
		if !installed[cmd] && !essential[cmd] {
			missing = append(missing, cmd+" (used at "+strings.Join(where, ", ")+")")
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("scripts/install-deps.sh does not check the command %s: add a `check COMMAND PACKAGE` line", m)
	}
	// The scan must see the tools we know the tests use, or it proves nothing.
	for _, c := range []string{"nbd-client", "fio", "nbdkit", "mkfs.ext4", "sfdisk", "qemu-img", "xz"} {
		if len(used[c]) == 0 {
			t.Errorf("the scan found no use of %s, which the kernel tests run: the scanner is broken", c)
		}
	}
}

// essentialCommands are the commands of Debian's Essential and required
// packages (coreutils, dash, bash, grep, sed, findutils, diffutils, gzip,
// util-linux, mount, hostname, apt, dpkg) and shell builtins and keywords:
// present on every Debian system, so install-deps.sh need not check them;
// plus go, which runs the tests, and nbdloop, the binary under test.
func essentialCommands() []string {
	return strings.Fields(`
		. : [ [[ ! { } alias break case cd command continue do done elif else esac eval exec exit export
		false fi for function getopts if in local read readonly return set shift test then trap true
		type ulimit umask unset until wait while echo printf kill
		sh bash dash env cat cp mv rm rmdir mkdir ln ls dd head tail sort uniq wc tr cut stat sync
		sleep truncate touch chmod chown mktemp basename dirname seq od sha256sum md5sum tee date yes
		uname readlink realpath nproc timeout mkfifo id df du install expr tac paste comm fold split
		grep egrep sed find xargs cmp diff gzip zcat tar awk mawk hostname
		mount umount losetup blockdev flock findmnt lsblk blkdiscard fallocate dmesg mountpoint
		wipefs blkid setpriv nsenter unshare logger
		apt-get dpkg dpkg-query go nbdloop`)
}

// installedCommands reads the commands that install-deps.sh checks: its
// `check COMMAND PACKAGE` lines.
func installedCommands(t *testing.T, path string) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmds := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 3 && fs[0] == "check" {
			cmds[fs[1]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(cmds) == 0 {
		t.Fatalf("%s has no `check COMMAND PACKAGE` lines", path)
	}
	return cmds
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// shebang returns the interpreter of a script's #! line (the program that
// env runs, for #!/usr/bin/env NAME), or "".
func shebang(text string) string {
	line, _, _ := strings.Cut(text, "\n")
	if !strings.HasPrefix(line, "#!") {
		return ""
	}
	fs := strings.Fields(line[2:])
	if len(fs) == 0 {
		return ""
	}
	if filepath.Base(fs[0]) == "env" && len(fs) > 1 {
		return fs[1]
	}
	return fs[0]
}

type commandUse struct {
	name string
	line int
}

// goTestCommands returns the commands a Go test file runs, as far as string
// constants show them: the first argument of exec.Command, exec.LookPath and
// the kerneltest helpers run and must, every command named to
// tooltest.Require and the first named to tooltest.RequireAny, and the first word of each command in
// scripts given to sh(t, ...) or to a shell's -c. Non-constant parts of a
// concatenation count as one placeholder word.
func goTestCommands(t *testing.T, path string) []commandUse {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var out []commandUse
	addCmd := func(e ast.Expr) {
		if s, ok := constString(e); ok && !strings.ContainsAny(s, " \x00") {
			out = append(out, commandUse{s, fset.Position(e.Pos()).Line})
		}
	}
	addScript := func(e ast.Expr) {
		for _, c := range shellCommands(concatString(e)) {
			out = append(out, commandUse{c, fset.Position(e.Pos()).Line})
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		var args []ast.Expr
		switch fn := call.Fun.(type) {
		case *ast.SelectorExpr:
			pkg, ok := fn.X.(*ast.Ident)
			if ok && pkg.Name == "tooltest" && fn.Sel.Name == "Require" {
				for _, a := range call.Args[1:] {
					addCmd(a)
				}
				return true
			}
			if ok && pkg.Name == "tooltest" && fn.Sel.Name == "RequireAny" && len(call.Args) > 1 {
				addCmd(call.Args[1]) // the one to install; the others are alternatives
				return true
			}
			if !ok || pkg.Name != "exec" {
				return true
			}
			switch fn.Sel.Name {
			case "Command", "LookPath":
				args = call.Args
			case "CommandContext":
				if len(call.Args) > 1 {
					args = call.Args[1:]
				}
			}
		case *ast.Ident:
			switch fn.Name {
			case "run", "must":
				if len(call.Args) > 1 {
					args = call.Args[1:]
				}
			case "sh":
				if len(call.Args) == 2 {
					addScript(call.Args[1])
				}
				return true
			}
		}
		if len(args) == 0 {
			return true
		}
		addCmd(args[0])
		if name, ok := constString(args[0]); ok && (filepath.Base(name) == "sh" || filepath.Base(name) == "bash") {
			for i, a := range args[1:] {
				if s, ok := constString(a); ok && strings.HasPrefix(s, "-") && strings.Contains(s, "c") && i+2 < len(args) {
					addScript(args[i+2])
				}
			}
		}
		return true
	})
	return out
}

func constString(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// concatString flattens "a" + x + "b" and fmt.Sprintf("a%sb", ...) into a
// script with the placeholder word ARG for what is not constant.
func concatString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			return concatString(e.X) + concatString(e.Y)
		}
	case *ast.BasicLit:
		if s, ok := constString(e); ok {
			return s
		}
	case *ast.CallExpr:
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Sprintf" && len(e.Args) > 0 {
			return concatString(e.Args[0])
		}
	case *ast.ParenExpr:
		return concatString(e.X)
	}
	return "ARG"
}

var (
	shellQuoted   = regexp.MustCompile(`'[^']*'|"(\\.|[^"\\])*"`)
	shellSplit    = regexp.MustCompile(`\|\||&&|[;|&(){}\x60\n]|\$\(|\bthen\b|\bdo\b|\belse\b`)
	shellAssign   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	shellFuncDecl = regexp.MustCompile(`(?m)^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*\(\)`)
	shellArith    = regexp.MustCompile(`\$\(\([^)]*\)\)`)
	shellParam    = regexp.MustCompile(`\$\{[^}]*\}`)
	// case patterns: "word)" or "a | b)" at the start of a line
	shellCasePattern = regexp.MustCompile(`(?m)^\s*[^\s()$]+(\s*\|\s*[^\s()$]+)*\)`)
)

// shellCommands returns the first word of each simple command in a shell
// script, roughly: comments and quoted strings are dropped (a command
// substitution inside double quotes is kept), assignments and redirections
// skipped, words with expansions ignored, functions the script defines left
// out. Good enough for the scripts of this repository.
func shellCommands(script string) []string {
	funcs := map[string]bool{}
	for _, m := range shellFuncDecl.FindAllStringSubmatch(script, -1) {
		funcs[m[1]] = true
	}
	var lines []string
	for _, l := range strings.Split(script, "\n") {
		if i := strings.Index(l, "#"); i >= 0 && (i == 0 || l[i-1] == ' ' || l[i-1] == '\t') {
			l = l[:i]
		}
		lines = append(lines, l)
	}
	s := strings.Join(lines, "\n")
	s = shellArith.ReplaceAllString(s, "ARG")
	s = shellParam.ReplaceAllString(s, "ARG")
	s = shellCasePattern.ReplaceAllString(s, "")
	// Keep command substitutions from inside double quotes, drop the rest.
	s = shellQuoted.ReplaceAllStringFunc(s, func(q string) string {
		if q[0] == '"' {
			var keep []string
			for _, part := range strings.Split(q, "$(")[1:] {
				keep = append(keep, "$("+part)
			}
			return " Q " + strings.Trim(strings.Join(keep, " "), `"`)
		}
		return " Q "
	})
	var out []string
	for _, seg := range shellSplit.Split(s, -1) {
		fs := strings.Fields(seg)
		for len(fs) > 0 && (shellAssign.MatchString(fs[0]) || strings.ContainsAny(fs[0][:1], "<>0123456789")) {
			fs = fs[1:]
		}
		if len(fs) == 0 {
			continue
		}
		w := fs[0]
		if w == "Q" || w == "ARG" || funcs[w] || strings.ContainsAny(w, "$*?=[]\\'\"") || strings.HasPrefix(w, "-") ||
			strings.HasPrefix(w, "./") || strings.HasPrefix(w, "scripts/") || strings.HasPrefix(w, "bin/") || strings.HasSuffix(w, ")") {
			continue
		}
		out = append(out, w)
	}
	return out
}
