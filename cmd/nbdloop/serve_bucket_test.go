package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/s3test"
	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// TestServeBucketBlockStatus: a disk in a real SeaweedFS bucket, served,
// shows its chunks never written as holes to nbdinfo --map, the chunks
// qemu-io writes as data, and a discarded chunk as a hole again.
func TestServeBucketBlockStatus(t *testing.T) {
	tooltest.Require(t, "qemu-io", "nbdinfo")
	dir := t.TempDir()
	bin := filepath.Join(dir, "nbdloop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	srv := s3test.Start(t, dir)
	srv.CreateBucket(t, "disks")
	srv.Put(t, "disks", "warm-up", []byte("a fresh server grows its first volume")) // retried
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	client(t, exec.Command(bin, "create", "--size", "16M", "--object-size", "1M", "s3://disks/map"))
	s := startServe(t, bin, "--unix", filepath.Join(dir, "bucket.sock"), "s3://disks/map/")
	uri := s.uri("")
	if got, want := nbdinfoMap(t, uri), "0+16777216:hole"; got != want {
		t.Errorf("nbdinfo --map of a new disk shows %s, want %s", got, want)
	}
	client(t, exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0xab 4M 64k", "-c", "write -P 0xcd 12M 1M", uri))
	want := "0+4194304:hole 4194304+1048576:data 5242880+7340032:hole 12582912+1048576:data 13631488+3145728:hole"
	if got := nbdinfoMap(t, uri); got != want {
		t.Errorf("nbdinfo --map after the writes shows %s, want %s", got, want)
	}
	client(t, exec.Command("qemu-io", "-f", "raw", "-c", "discard 12M 1M", uri))
	want = "0+4194304:hole 4194304+1048576:data 5242880+11534336:hole"
	if got := nbdinfoMap(t, uri); got != want {
		t.Errorf("nbdinfo --map after a discard shows %s, want %s", got, want)
	}
	s.stop()
}
