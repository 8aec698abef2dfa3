package main

import (
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/s3test"
)

// TestCreate: create makes a disk in a real SeaweedFS through the AWS
// environment, refuses one that exists, and checks its arguments.
func TestCreate(t *testing.T) {
	srv := s3test.Start(t, t.TempDir())
	srv.CreateBucket(t, "disks")
	srv.Put(t, "disks", "warm-up", []byte("a fresh server grows its first volume")) // retried
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"made", []string{"create", "--size", "100G", "s3://disks/vm1"}, 0, "s3://disks/vm1/: 100G in objects of 4M (attach it: nbdloop attach s3://disks/vm1/)", ""},
		{"object size", []string{"create", "--size", "1G", "--object-size", "1M", "s3://disks/vm2/"}, 0, "s3://disks/vm2/: 1G in objects of 1M", ""},
		{"exists", []string{"create", "--size", "1G", "s3://disks/vm1"}, 1, "", "nbdloop: s3://disks/vm1/: a disk exists there: vm1/manifest is there (attach it, or choose another prefix)"},
		{"no bucket", []string{"create", "--size", "1G", "s3://nosuchbucket/vm"}, 1, "", "no such bucket"},
		{"no size", []string{"create", "s3://disks/vm3"}, 2, "", "--size is required"},
		{"bad object size", []string{"create", "--size", "1G", "--object-size", "3M", "s3://disks/vm3"}, 1, "", "object size 3145728 is not a power of 2"},
		{"odd size", []string{"create", "--size", "1000", "s3://disks/vm3"}, 1, "", "not a multiple of 512"},
		{"not s3", []string{"create", "--size", "1G", "disk.img"}, 1, "", "not an s3://BUCKET/PREFIX URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runArgs(t, tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("nbdloop %s = %d, stdout %q, stderr %q; want %d, %q, %q", strings.Join(tt.args, " "), code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}
