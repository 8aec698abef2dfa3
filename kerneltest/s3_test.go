//go:build kernel

package kerneltest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/s3test"
)

// TestKernelS3 is the cloud image in a bucket: the xz-compressed
// partitioned disk stored in SeaweedFS (a real S3 server, started here),
// attached as s3://BUCKET/KEY with -P, configured through the AWS
// environment; its ext4 partition mounted read-only and the files
// verified; the device reads as the uncompressed disk. An attach with a
// wrong secret key is refused with one line.
func TestKernelS3(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	start := time.Now()
	img, files := partitionedExt4(t, dir)
	diskSum := sha(t, img, 0)
	xzPath := filepath.Join(dir, "disk.img.xz")
	sh(t, "xz -0 -T2 --block-size=1MiB -c "+img+" > "+xzPath)
	os.Remove(img)
	weed := filepath.Join(dir, "seaweedfs")
	if err := os.Mkdir(weed, 0o755); err != nil {
		t.Fatal(err)
	}
	s := s3test.Start(t, weed)
	t.Logf("SeaweedFS started in %v", time.Since(start))
	s.CreateBucket(t, "images")
	b, err := os.ReadFile(xzPath)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(t, "images", "cloud/disk.img.xz", b)
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Logf("image made and stored in %v", time.Since(start))
	url := "s3://images/cloud/disk.img.xz"

	start = time.Now()
	dev, stderr := attachStderr(t, "-P", url)
	t.Logf("attached in %v", time.Since(start))
	if !strings.Contains(stderr, "read-only") {
		t.Errorf("attach stderr = %q, want the read-only note", stderr)
	}
	checkCloudImage(t, dev, url, dir, files, diskSum)

	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	r := run(t, nbdloop(t), "attach", url)
	want := "the secret key does not match the access key ID " + s3test.AccessKey
	if r.code == 0 || !strings.Contains(r.stderr, want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("attach with a wrong secret key: exit %d, stderr %q; want a failure, one line with %q", r.code, r.stderr, want)
	}
	requireClean(t, "after the refused attach")
}
