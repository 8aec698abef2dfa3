package httpsrc

import (
	"net/url"
	"path"
	"strings"

	"github.com/nbdloop/nbdloop/sources"
)

// Named opens the files that an image by URL names inside its bytes (a
// qcow2 image's backing file) as Sources, with Options. A name is a path
// relative to the URL of the image that names it, and must lead beneath
// that image's directory on the same server: "base.qcow2" next to
// https://h/dir/top.qcow2 is https://h/dir/base.qcow2. An absolute path,
// and a name whose ".." leaves the directory, are refused with a
// *sources.ConfinedError, as sources.NamedFiles refuses paths; other URLs
// never resolve (a name is a path, whatever it holds).
type Named struct {
	Options Options
}

// Open opens, read-only, the object that name stands for in the image at
// the URL base, and returns it and its URL.
func (n Named) Open(base, name string) (sources.Source, string, error) {
	return NamedBy{Resolve: Resolve, OpenAt: func(loc string) (sources.Source, error) { return Open(loc, n.Options) }}.Open(base, name)
}

// NamedBy opens the files an image names, as Named does, in another
// store (sources/s3src): Resolve finds where a name leads (returning a
// *sources.ConfinedError for one that leaves the image's directory),
// OpenAt opens what is there.
type NamedBy struct {
	Resolve func(base, name string) (string, error)
	OpenAt  func(loc string) (sources.Source, error)
}

// Open opens, read-only, what name stands for in the image at base, and
// returns it and where it is.
func (n NamedBy) Open(base, name string) (sources.Source, string, error) {
	loc, err := n.Resolve(base, name)
	if err != nil {
		return nil, loc, err
	}
	src, err := n.OpenAt(loc)
	if err != nil {
		return nil, loc, err
	}
	return src, loc, nil
}

// Resolve returns the URL that name, found in the image at the URL base,
// stands for, or a *sources.ConfinedError for a name that leads outside
// base's directory.
func Resolve(base, name string) (string, error) {
	u, err := parseURL(base)
	if err != nil {
		return "", err
	}
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", &sources.ConfinedError{Name: name, Reason: "not a file name"}
	}
	dir := u.JoinPath("..")
	dir.RawQuery, dir.ForceQuery = "", false
	if !strings.HasSuffix(dir.Path, "/") {
		dir.Path += "/"
	}
	if strings.HasPrefix(name, "/") {
		return "", &sources.ConfinedError{Name: name, Reason: "an absolute path: only names relative to " + dir.Redacted() + " are followed"}
	}
	loc := u.ResolveReference(&url.URL{Path: name})
	// A ".." above the server's root resolves to the root: look at the
	// name too.
	if rel := path.Clean(name); rel == ".." || strings.HasPrefix(rel, "../") {
		return loc.String(), &sources.ConfinedError{Name: name, Path: loc.String(), Reason: "outside " + dir.String()}
	}
	if p := path.Clean(loc.Path); !strings.HasPrefix(p, dir.Path) || p+"/" == dir.Path {
		return loc.String(), &sources.ConfinedError{Name: name, Path: loc.String(), Reason: "outside " + dir.String()}
	}
	return loc.String(), nil
}
