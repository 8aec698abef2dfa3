package s3src

import (
	"path"
	"strings"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/httpsrc"
)

// Named returns what opens the objects that an image in a bucket names
// inside its bytes (a qcow2 image's backing file) as Sources, with opts. A
// name is a key relative to the "directory" of the key of the image that
// names it, in the same bucket, and must stay beneath it (see Resolve).
func Named(opts Options) httpsrc.NamedBy {
	return httpsrc.NamedBy{Resolve: Resolve, OpenAt: func(loc string) (sources.Source, error) { return Open(loc, opts) }}
}

// Resolve returns the s3:// URL that name, found in the image at the URL
// base, stands for: "base.qcow2" next to s3://b/dir/top.qcow2 is
// s3://b/dir/base.qcow2. An absolute name, and one whose ".." leaves the
// directory, are refused with a *sources.ConfinedError, as
// sources.NamedFiles refuses paths.
func Resolve(base, name string) (string, error) {
	b, err := Parse(base)
	if err != nil {
		return "", err
	}
	dir := path.Dir(b.Key) + "/"
	if dir == "./" {
		dir = ""
	}
	where := "s3://" + b.Bucket + "/" + dir
	switch rel := path.Clean(name); {
	case name == "" || strings.ContainsFunc(name, isControl):
		return "", &sources.ConfinedError{Name: name, Reason: "not a file name"}
	case strings.HasPrefix(name, "/"):
		return "", &sources.ConfinedError{Name: name, Reason: "an absolute path: only names relative to " + where + " are followed"}
	case rel == ".." || strings.HasPrefix(rel, "../") || rel == ".":
		loc := Location{Bucket: b.Bucket, Key: path.Join(dir, rel)}.String()
		return loc, &sources.ConfinedError{Name: name, Path: loc, Reason: "outside " + where}
	default:
		return Location{Bucket: b.Bucket, Key: dir + rel}.String(), nil
	}
}
