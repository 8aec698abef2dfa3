package attach

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/nbdloop/nbdloop/filters"
)

// FileIdentity is a file an attach request serves, as it was at attach:
// its absolute path and what the path led to (device and inode). A restart
// that finds another file at the path refuses to serve it.
type FileIdentity struct {
	Path string `json:"path"`
	Dev  uint64 `json:"dev"`
	Ino  uint64 `json:"ino"`
	// Program is set for an exec: program, which is run, not served,
	// and so not locked.
	Program bool `json:"program,omitempty"`
}

// pinned returns cfg with every path it names made absolute against the
// caller's working directory (SOURCE, composite parts, FILE= of --type,
// filter files), so that a server started later from elsewhere (a restart)
// finds the same files, and with Files recording what the served paths are.
func (c Config) pinned() (Config, error) {
	wd, err := os.Getwd()
	if err != nil {
		return c, fmt.Errorf("finding the current directory: %w", err)
	}
	abs := func(arg string) string {
		spec, err := ParseSpec(arg)
		if err == nil && spec.Kind == KindNBD {
			return remoteAbsolute(spec, wd).String()
		}
		if err != nil || (spec.Kind != KindFile && spec.Kind != KindExec) || filepath.IsAbs(spec.Path) {
			return arg
		}
		spec.Path = filepath.Join(wd, spec.Path)
		return spec.String()
	}
	c.Source = abs(c.Source)
	c.Composite.Sources = mapStrings(c.Composite.Sources, abs)
	c.Composite.Types = mapStrings(c.Composite.Types, func(t string) string {
		key, typ, ok := strings.Cut(t, "=")
		if _, err := strconv.Atoi(key); err == nil || !ok || !strings.Contains(key, "/") || filepath.IsAbs(key) {
			return t
		}
		return filepath.Join(wd, key) + "=" + typ
	})
	c.Filters = mapStrings(c.Filters, func(f string) string {
		s, err := filters.Parse(f)
		if err != nil {
			return f
		}
		return s.Absolute(wd).String()
	})
	c.Files = nil
	for _, arg := range append([]string{c.Source}, c.Composite.Sources...) {
		spec, err := ParseSpec(arg)
		if err != nil || (spec.Kind != KindFile && spec.Kind != KindExec) {
			continue
		}
		if id, ok := identify(spec.Path); ok && !c.hasFile(id.Path) {
			id.Program = spec.Kind == KindExec
			c.Files = append(c.Files, id)
		}
	}
	return c, nil
}

func (c Config) hasFile(path string) bool {
	for _, f := range c.Files {
		if f.Path == path {
			return true
		}
	}
	return false
}

func mapStrings(in []string, f func(string) string) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}

// identify stats path (following symbolic links, as opening it does).
func identify(path string) (FileIdentity, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return FileIdentity{}, false
	}
	return FileIdentity{Path: path, Dev: uint64(st.Dev), Ino: st.Ino}, true
}

// checkFiles refuses to serve when a path of cfg.Files now leads to another
// file than at attach: a file replaced under the same name (or a restart
// that would otherwise serve whatever is there now) must not be served in
// place of the device's file.
func checkFiles(files []FileIdentity) error {
	for _, f := range files {
		now, ok := identify(f.Path)
		if !ok {
			continue // opening it says why
		}
		if now.Dev != f.Dev || now.Ino != f.Ino {
			return fmt.Errorf("%s: is another file than when the device was attached (inode %d, not %d): not served (detach the device and attach the file again)",
				f.Path, now.Ino, f.Ino)
		}
	}
	return nil
}
