package s3src

import (
	"errors"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		raw, bucket, key, err string
	}{
		{"s3://b/k", "b", "k", ""},
		{"S3://my.bucket/dir/disk.qcow2", "my.bucket", "dir/disk.qcow2", ""},
		{"s3://b/a%20b?x", "b", "a%20b?x", ""},
		{"s3://", "", "", "no bucket"},
		{"s3:///k", "", "", "no bucket"},
		{"s3://b/", "", "", "no object key"},
		{"s3://b/dir/", "", "", "names a prefix"},
		{"s3://u:p@b/k", "", "", "not a bucket name"},
		{"s3://b:9000/k", "", "", "not a bucket name"},
		{"s3://b/k\n", "", "", "control characters"},
		{"http://b/k", "", "", "not an s3:// URL"},
	} {
		loc, err := Parse(tt.raw)
		switch {
		case tt.err == "" && (err != nil || loc.Bucket != tt.bucket || loc.Key != tt.key):
			t.Errorf("Parse(%q) = %+v, %v; want %s/%s", tt.raw, loc, err, tt.bucket, tt.key)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("Parse(%q) = %v, want an error with %q", tt.raw, err, tt.err)
		}
	}
}

func TestIsAWS(t *testing.T) {
	for _, tt := range []struct {
		endpoint string
		want     bool
	}{
		{"https://s3.eu-west-3.amazonaws.com", true},
		{"https://s3.cn-north-1.amazonaws.com.cn", true},
		{"http://127.0.0.1:8333", false},
		{"https://minio.example.com", false},
		{"https://amazonaws.com.evil.example", false},
	} {
		if got := isAWS(tt.endpoint); got != tt.want {
			t.Errorf("isAWS(%s) = %v, want %v", tt.endpoint, got, tt.want)
		}
	}
}

func TestResolve(t *testing.T) {
	for _, tt := range []struct {
		base, name, want string
		confined         bool
	}{
		{"s3://b/dir/top.qcow2", "base.qcow2", "s3://b/dir/base.qcow2", false},
		{"s3://b/top.qcow2", "base.qcow2", "s3://b/base.qcow2", false},
		{"s3://b/dir/top.qcow2", "sub/../base.qcow2", "s3://b/dir/base.qcow2", false},
		{"s3://b/dir/top.qcow2", "../base.qcow2", "", true},
		{"s3://b/top.qcow2", "..", "", true},
		{"s3://b/dir/top.qcow2", "/etc/passwd", "", true},
		{"s3://b/dir/top.qcow2", "", "", true},
		{"s3://b/dir/top.qcow2", ".", "", true},
	} {
		got, err := Resolve(tt.base, tt.name)
		var ce *sources.ConfinedError
		if tt.confined != errors.As(err, &ce) || (!tt.confined && got != tt.want) {
			t.Errorf("Resolve(%s, %q) = %s, %v; want %s (confined: %v)", tt.base, tt.name, got, err, tt.want, tt.confined)
		}
	}
}
