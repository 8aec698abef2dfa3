package s3src

import (
	"fmt"
	"strings"
)

// Location is an object's place: its bucket and key.
type Location struct {
	Bucket, Key string
}

// String is the location as an s3:// URL.
func (l Location) String() string { return "s3://" + l.Bucket + "/" + l.Key }

// IsURL reports whether s is an s3:// URL (well formed or not).
func IsURL(s string) bool { return strings.HasPrefix(strings.ToLower(s), "s3://") }

// Parse parses s3://BUCKET/KEY. The key is taken as written (no
// %-decoding): everything after the bucket's slash.
func Parse(raw string) (Location, error) {
	if !IsURL(raw) {
		return Location{}, fmt.Errorf("%s: not an s3:// URL", raw)
	}
	bucket, key, _ := strings.Cut(raw[len("s3://"):], "/")
	switch {
	case bucket == "":
		return Location{}, fmt.Errorf("%s: no bucket in the URL (give s3://BUCKET/KEY)", raw)
	case strings.ContainsAny(bucket, "@:?#") || strings.ContainsFunc(bucket, isControl):
		return Location{}, fmt.Errorf("%s: %q is not a bucket name (give s3://BUCKET/KEY; credentials and endpoints come from the AWS configuration, or --s3-profile and --s3-endpoint)", raw, bucket)
	case key == "":
		return Location{}, fmt.Errorf("%s: no object key in the URL (give s3://BUCKET/KEY)", raw)
	case strings.HasSuffix(key, "/"):
		return Location{}, fmt.Errorf("%s: the key ends with /: that names a prefix, not an object (give the object's key)", raw)
	case strings.ContainsFunc(key, isControl):
		return Location{}, fmt.Errorf("%q: control characters in the key", raw)
	}
	return Location{Bucket: bucket, Key: key}, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
