package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
)

// DefaultNbdTab is the table that `nbdloop nbdtab` and nbdloop.service
// read when no FILE is given.
const DefaultNbdTab = "/etc/nbdloop/nbdtab"

const nbdtabHelp = `The table has one device per line, in attach's syntax: an optional device
(/dev/nbdN, else the first free one), then options and SOURCE:
  # cat /etc/nbdloop/nbdtab
  # a partitioned disk image on /dev/nbd3, the first free device for the other
  /dev/nbd3 --partscan /srv/disk.img
  --read-only /srv/images/root.img.xz

Words split at blanks; '...', "..." and \ quote as in sh; # starts a comment.
Paths should be absolute (relative ones are taken from the current
directory, / under systemd). --run, --foreground and --json are refused.

attach attaches every line that is not attached yet (a device remembers the
table file and the line that attached it, so running it again attaches only
new or detached lines); detach detaches every device that this table
attached, including those of lines removed since. Both carry on past a
failing line, report it as FILE:LINE, and exit with 1 at the end.
nbdloop.service runs them at boot, before local file systems are mounted (so
fstab may name /dev/nbdN and its partitions), and at shutdown, after they
are unmounted.`

func nbdtabCommand() *cli.Command {
	return &cli.Command{
		Name:        "nbdtab",
		Usage:       "attach or detach the devices of a table (" + DefaultNbdTab + "), as nbdloop.service does at boot",
		UsageText:   "nbdloop nbdtab attach|detach [FILE]",
		Description: nbdtabHelp,
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("nbdtab: %v (see nbdloop nbdtab --help)", err)
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 || (c.Args().First() != "attach" && c.Args().First() != "detach") {
				return usageError("nbdtab: attach or detach expected, then an optional FILE (default %s)", DefaultNbdTab)
			}
			file := DefaultNbdTab
			if c.NArg() == 2 {
				file = c.Args().Get(1)
			}
			abs, err := filepath.Abs(file)
			if err != nil {
				return err
			}
			lines, err := readNbdTab(abs)
			if err != nil {
				return err
			}
			if err := requireRoot("nbdtab"); err != nil {
				return err
			}
			failed := 0
			if c.Args().First() == "attach" {
				failed = nbdtabAttach(c, abs, lines)
			} else {
				failed = nbdtabDetach(c, abs)
			}
			if failed > 0 {
				return cli.Exit("", exitError)
			}
			return nil
		},
	}
}

// tabLine is one line of an nbdtab file: its number, its words, and the
// key that a device attached from it records (attach.TableEntry.Line).
type tabLine struct {
	num   int
	words []string
	key   string
}

// readNbdTab reads the lines of an nbdtab file that are not blank or
// comments. A line that does not split (an open quote) is an error naming
// it.
func readNbdTab(path string) ([]tabLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("nbdtab: %w", err)
	}
	defer f.Close()
	var lines []tabLine
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		words, err := splitWords(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, n, err)
		}
		if len(words) == 0 {
			continue
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = w
			if w == "" || strings.ContainsAny(w, " \t\"'\\#") {
				quoted[i] = strconv.Quote(w)
			}
		}
		lines = append(lines, tabLine{num: n, words: words, key: strings.Join(quoted, " ")})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("nbdtab: %s: %w", path, err)
	}
	return lines, nil
}

// splitWords splits a line into words as sh does, without expansions:
// blanks separate words, '...' quotes literally, "..." quotes with \ escaping
// " and \, \ outside quotes escapes the next character, and # at the start
// of a word starts a comment.
func splitWords(line string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == ' ' || ch == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case ch == '#' && !inWord:
			return words, nil
		case ch == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated ' quote")
			}
			w.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case ch == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\') {
					i++
				}
				w.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, errors.New(`unterminated " quote`)
			}
			inWord = true
		case ch == '\\':
			if i+1 < len(line) {
				i++
				w.WriteByte(line[i])
			}
			inWord = true
		default:
			w.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// tableArgs turns a line's words into attach arguments: a leading
// /dev/nbdN becomes --device.
func tableArgs(words []string) []string {
	if strings.HasPrefix(words[0], "/dev/") {
		if _, err := attach.ParseDevice(words[0]); err == nil {
			return append([]string{"--device", words[0]}, words[1:]...)
		}
	}
	return words
}

// nbdtabAttach attaches the lines that no device was attached from, and
// returns how many failed.
func nbdtabAttach(c *cli.Context, file string, lines []tabLine) int {
	devs, err := attach.List(nil)
	if err != nil {
		fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s\n", oneLine(err.Error()))
		return 1
	}
	attached := map[string]string{}
	for _, d := range devs {
		if d.NbdTab != nil && d.NbdTab.File == file {
			attached[d.NbdTab.Line] = d.Name
		}
	}
	failed := 0
	for _, l := range lines {
		if dev, ok := attached[l.key]; ok {
			fmt.Fprintf(c.App.Writer, "%s\t%s\t(attached already)\n", dev, l.key)
			continue
		}
		cfg, err := attachConfig(tableArgs(l.words))
		if err == nil {
			cfg.NbdTab = &attach.TableEntry{File: file, Line: l.key}
			var d *attach.Device
			var warns []string
			d, warns, err = attach.Attach(context.Background(), cfg)
			for _, w := range warns {
				fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s:%d: %s\n", file, l.num, w)
			}
			if err == nil {
				attached[l.key] = d.Name
				fmt.Fprintf(c.App.Writer, "%s\t%s\n", d.Name, l.key)
				continue
			}
		}
		fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s:%d: %s\n", file, l.num, oneLine(err.Error()))
		failed++
	}
	return failed
}

// nbdtabDetach detaches every device attached from file, and returns how
// many failed.
func nbdtabDetach(c *cli.Context, file string) int {
	devs, err := attach.List(nil)
	if err != nil {
		fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s\n", oneLine(err.Error()))
		return 1
	}
	failed := 0
	for _, d := range devs {
		if d.NbdTab == nil || d.NbdTab.File != file {
			continue
		}
		if err := detachDevice(context.Background(), &d, false); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "nbdloop: %s\n", oneLine(err.Error()))
			failed++
			continue
		}
		fmt.Fprintf(c.App.Writer, "%s\t%s\t(detached)\n", d.Name, d.NbdTab.Line)
	}
	return failed
}
