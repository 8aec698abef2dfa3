package attach

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/s3test"
)

// TestOpenSourceS3: objects in a bucket of a real S3 server (SeaweedFS)
// open as URLs' objects do: raw, compressed, qcow2 with its backing file
// next to it in the bucket, one partition; and what cannot be served is
// refused with one line.
func TestOpenSourceS3(t *testing.T) {
	// The server first: the weed binary is found by the cache rule, which
	// reads XDG_CACHE_HOME for a checkout under /tmp.
	s := s3test.Start(t, t.TempDir())
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir, data, topRaw, whole := urlImages(t)
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("AWS_PROFILE", "")
	s.CreateBucket(t, "images")
	for _, name := range []string{"disk.img", "disk.img.xz", "disk.img.gz", "disk.img.zst", "base.qcow2", "top.qcow2", "out.qcow2", "gpt.img", "odd.img", "disk.vmdk"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		s.Put(t, "images", "dir/"+name, b)
	}
	tests := []struct {
		name   string
		opts   OpenOptions
		format string
		want   []byte
		note   string
	}{
		{name: "disk.img", format: "raw", want: data, note: "objects by URL are read-only: attached read-only (add --filter cow"},
		{name: "disk.img.xz", format: "xz", want: data, note: "xz images are read-only"},
		{name: "disk.img.zst", opts: OpenOptions{ReadOnly: true}, format: "zstd", want: data},
		{name: "gpt.img", opts: OpenOptions{Composite: Composite{Partition: 2}}, format: "raw", want: whole[2<<20 : 3<<20], note: "objects by URL are read-only"},
		{name: "top.qcow2", format: "qcow2", want: topRaw, note: "objects by URL are read-only: attached read-only (add --filter cow"},
		{name: "disk.img", opts: OpenOptions{S3Endpoint: s.Endpoint, ReadOnly: true}, format: "raw", want: data},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := checkOpened(t, "s3://images/dir/"+tt.name, tt.opts, tt.format, tt.want, tt.note)
			if !strings.HasPrefix(op.Pin, `etag:"`) {
				t.Errorf("pin %q, want the ETag", op.Pin)
			}
		})
	}

	for _, tt := range []struct {
		name, url string
		opts      OpenOptions
		env       map[string]string
		want      string
	}{
		{"replaced", "s3://images/dir/disk.img", OpenOptions{ExpectPin: `etag:"zero"`}, nil, `s3://images/dir/disk.img: the object changed in the store since it was attached (it was etag:"zero", it is etag:"`},
		{"wrong secret key", "s3://images/dir/disk.img", OpenOptions{}, map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong"}, "s3://images/dir/disk.img: the store refused the request's signature: the secret key does not match the access key ID " + s3test.AccessKey + " (check AWS_SECRET_ACCESS_KEY"},
		{"no such bucket", "s3://nobucket/disk.img", OpenOptions{}, nil, "s3://nobucket/disk.img: no bucket nobucket at " + s.Endpoint},
		{"no such key", "s3://images/dir/missing.img", OpenOptions{}, nil, "s3://images/dir/missing.img: no object dir/missing.img in bucket images"},
		{"backing file outside", "s3://images/dir/out.qcow2", OpenOptions{}, nil, `"../base.qcow2" (s3://images/base.qcow2`},
		{"odd size", "s3://images/dir/odd.img", OpenOptions{}, nil, "s3://images/dir/odd.img: size 1000 is not a multiple of 512 bytes"},
		{"vmdk", "s3://images/dir/disk.vmdk", OpenOptions{}, nil, "vmdk: s3://images/dir/disk.vmdk: descriptor has no extent lines"},
	} {
		t.Run("refused "+tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			tt.opts.BlockSize = 512
			op, err := OpenSource(Spec{Kind: KindURL, Path: tt.url}, tt.opts)
			if err == nil {
				op.Source.Close()
				t.Fatal("OpenSource succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("OpenSource = %q, want one line with %q", err, tt.want)
			}
		})
	}
}

func TestParseSpecS3(t *testing.T) {
	for _, tt := range []struct{ in, err string }{
		{"s3://bucket/dir/disk.img", ""},
		{"s3://bucket", "no object key"},
		{"s3://key:secret@bucket/k", "not a bucket name"},
	} {
		spec, err := ParseSpec(tt.in)
		switch {
		case tt.err == "" && (err != nil || spec.Kind != KindURL || spec.String() != tt.in):
			t.Errorf("ParseSpec(%s) = %+v, %v; want the URL", tt.in, spec, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("ParseSpec(%s) = %v, want an error with %q", tt.in, err, tt.err)
		}
	}
	// Ending in a slash, it is a disk in a bucket (bucket.go), not an
	// object.
	if spec, err := ParseSpec("s3://bucket/prefix/"); err != nil || spec.Kind != KindBucket {
		t.Errorf("ParseSpec(s3://bucket/prefix/) = %+v, %v; want a bucket disk", spec, err)
	}
}
