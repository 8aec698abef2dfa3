package s3test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// TestServer: a real SeaweedFS stores and serves objects with ranges and
// ETags, refuses a wrong key, and keeps its objects across a kill and a
// restart.
func TestServer(t *testing.T) {
	s := Start(t, t.TempDir())
	s.CreateBucket(t, "images", "other")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	etag := s.Put(t, "images", "disk.raw", data)
	if etag == "" {
		t.Fatal("PutObject gave no ETag")
	}
	c := s.Client()
	for _, tt := range []struct {
		rng  string
		want []byte
	}{
		{"bytes=0-15", data[:16]},
		{"bytes=100-199", data[100:200]},
		{"bytes=262000-", data[262000:]},
	} {
		out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("images"), Key: aws.String("disk.raw"),
			Range: aws.String(tt.rng), IfMatch: aws.String(etag)})
		if err != nil {
			t.Fatalf("GetObject %s: %v", tt.rng, err)
		}
		var got bytes.Buffer
		got.ReadFrom(out.Body)
		out.Body.Close()
		if !bytes.Equal(got.Bytes(), tt.want) || aws.ToString(out.ETag) != etag {
			t.Errorf("GetObject %s = %d bytes, ETag %s; want %d bytes, ETag %s", tt.rng, got.Len(), aws.ToString(out.ETag), len(tt.want), etag)
		}
	}
	_, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("images"), Key: aws.String("disk.raw"),
		Range: aws.String("bytes=0-0"), IfMatch: aws.String(`"0000"`)})
	if code := apiCode(err); code != "PreconditionFailed" {
		t.Errorf("GetObject with another ETag: %v (code %q), want PreconditionFailed", err, code)
	}
	_, err = s.ClientWith(AccessKey, "wrong").ListBuckets(context.Background(), &s3.ListBucketsInput{})
	if code := apiCode(err); code != "SignatureDoesNotMatch" {
		t.Errorf("ListBuckets with a wrong secret key: %v (code %q), want SignatureDoesNotMatch", err, code)
	}
	s.Restart(t)
	if got := s.Get(t, "images", "disk.raw"); !bytes.Equal(got, data) {
		t.Errorf("after a kill and a restart the object has %d bytes, want the %d written", len(got), len(data))
	}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestScriptVersion: the script builds the version Binary looks for.
func TestScriptVersion(t *testing.T) {
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(repo, "scripts", "install-seaweedfs.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^version=(\S+)$`).FindSubmatch(b)
	if m == nil || string(m[1]) != Version {
		t.Errorf("scripts/install-seaweedfs.sh builds version %q, s3test.Version is %q: make them one", m, Version)
	}
}

// TestCacheDir: the cache directory follows the script's rule.
func TestCacheDir(t *testing.T) {
	t.Setenv("NBDLOOP_SEAWEEDFS_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/home/u/.cache")
	for _, tt := range []struct{ repo, want string }{
		{"/work/nbdloop", "/work/nbdloop/.cache/seaweedfs"},
		{"/tmp/clone", "/home/u/.cache/nbdloop/seaweedfs"},
		{"/var/tmp/x", "/home/u/.cache/nbdloop/seaweedfs"},
		{"/tmpfoo", "/tmpfoo/.cache/seaweedfs"},
	} {
		if got := cacheDir(tt.repo); got != tt.want {
			t.Errorf("cacheDir(%s) = %s, want %s", tt.repo, got, tt.want)
		}
	}
	t.Setenv("NBDLOOP_SEAWEEDFS_CACHE", "/srv/weed")
	if got := cacheDir("/work/nbdloop"); got != "/srv/weed" {
		t.Errorf("with NBDLOOP_SEAWEEDFS_CACHE=/srv/weed, cacheDir = %s", got)
	}
}
