package s3src

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/s3test"
	"github.com/nbdloop/nbdloop/internal/tlstest"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/httpsrc"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
	"github.com/nbdloop/nbdloop/sources/xz"
)

// useServer points the AWS configuration of this process at s, through
// the environment, as a user's shell would.
func useServer(t *testing.T, s *s3test.Server) {
	t.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
}

func testOptions() Options {
	return Options{Fetch: httpsrc.Options{BlockSize: 64 << 10, CacheSize: 1 << 20}}
}

// TestSeaweedFS reads objects from a real S3 server: the Source contract,
// the formats on top, the ETag pinned.
func TestSeaweedFS(t *testing.T) {
	s := s3test.Start(t, t.TempDir())
	useServer(t, s)
	s.CreateBucket(t, "images")
	data := imagetest.Data(3<<20+4096, 21)
	s.Put(t, "images", "dir/disk.img", data)
	t.Run("Conformance", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sources.Source {
			src, err := Open("s3://images/dir/disk.img", testOptions())
			if err != nil {
				t.Fatal(err)
			}
			return src
		}, data)
	})
	t.Run("xz", func(t *testing.T) {
		s.Put(t, "images", "disk.img.xz", imagetest.XZ(t, data, "--block-size=300KiB"))
		raw, err := Open("s3://images/disk.img.xz", testOptions())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		img, err := xz.Open(raw, raw.Size(), xz.Options{CacheSize: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		imagetest.CheckReads(t, img, data)
	})
	t.Run("Pinned", func(t *testing.T) {
		src, err := Open("s3://images/dir/disk.img", testOptions())
		if err != nil {
			t.Fatal(err)
		}
		pin := src.Object().Pin()
		src.Close()
		if !strings.HasPrefix(pin, `etag:"`) {
			t.Fatalf("Pin() = %q, want the store's ETag", pin)
		}
		opts := testOptions()
		opts.Fetch.Pin = `etag:"another"`
		if _, err := Open("s3://images/dir/disk.img", opts); err == nil || !strings.Contains(err.Error(), "changed in the store") {
			t.Errorf("Open with another pin: %v, want the object refused as changed", err)
		}
		opts.Fetch.Pin = pin
		src, err = Open("s3://images/dir/disk.img", opts)
		if err != nil {
			t.Fatalf("Open with its own pin: %v", err)
		}
		src.Close()
	})
}

// TestReplaced: an object replaced (same size, other bytes) or deleted
// while it is served fails the reads of what is not cached with EIO, logs
// one line, and never serves the new bytes.
func TestReplaced(t *testing.T) {
	s := s3test.Start(t, t.TempDir())
	useServer(t, s)
	s.CreateBucket(t, "bkt")
	old := imagetest.Data(1<<20, 22)
	for _, tt := range []struct {
		name   string
		change func(key string)
	}{
		{"replaced", func(key string) { s.Put(t, "bkt", key, imagetest.Data(1<<20, 23)) }},
		{"deleted", func(key string) { s.Delete(t, "bkt", key) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.name + ".img"
			s.Put(t, "bkt", key, old)
			log := make(chan string, 16)
			opts := testOptions()
			opts.Fetch.Logf = func(format string, args ...any) { log <- fmt.Sprintf(format, args...) }
			src, err := Open("s3://bkt/"+key, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			head := make([]byte, 64<<10)
			if _, err := src.ReadAt(head, 0); err != nil || !bytes.Equal(head, old[:len(head)]) {
				t.Fatalf("first block: %v", err)
			}
			tt.change(key)
			buf := make([]byte, 64<<10)
			_, err = src.ReadAt(buf, 512<<10)
			if !errors.Is(err, syscall.EIO) || !errors.Is(err, httpsrc.ErrReplaced) {
				t.Errorf("read after the change: %v, want ErrReplaced (EIO)", err)
			}
			if _, err := src.ReadAt(head, 0); err != nil || !bytes.Equal(head, old[:len(head)]) {
				t.Errorf("cached block after the change: %v", err)
			}
			if n := len(log); n != 1 {
				t.Errorf("logged %d lines, want one", n)
			} else if line := <-log; !strings.Contains(line, "replaced") {
				t.Errorf("logged %q, want a line that says the object was replaced", line)
			}
		})
	}
}

// TestStatErrors: what cannot be served is refused at Stat with one line
// that says what to check.
func TestStatErrors(t *testing.T) {
	s := s3test.Start(t, t.TempDir())
	useServer(t, s)
	s.CreateBucket(t, "bkt")
	s.Put(t, "bkt", "disk.img", imagetest.Data(4096, 24))
	s.Put(t, "bkt", "empty", nil)
	for _, tt := range []struct {
		name, url string
		env       map[string]string
		want      string
	}{
		{"no such key", "s3://bkt/nothing.img", nil, "no object nothing.img in bucket bkt"},
		{"no such bucket", "s3://nobucket/disk.img", nil, "no bucket nobucket at http://127.0.0.1:"},
		{"empty", "s3://bkt/empty", nil, "the object is empty"},
		{"wrong secret", "s3://bkt/disk.img", map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong"}, "the secret key does not match the access key ID " + s3test.AccessKey},
		{"unknown key", "s3://bkt/disk.img", map[string]string{"AWS_ACCESS_KEY_ID": "AKIDUNKNOWN"}, "does not know the access key ID AKIDUNKNOWN"},
		{"no credentials", "s3://bkt/disk.img", map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "no AWS credentials"},
		{"no key", "s3://bkt", nil, "no object key in the URL"},
		{"a prefix", "s3://bkt/dir/", nil, "names a prefix"},
		{"credentials in the URL", "s3://user:pw@bkt/k", nil, "is not a bucket name"},
		{"endpoint flag", "s3://bkt/disk.img", map[string]string{"--s3-endpoint": "ftp://x"}, "not an http:// or https:// URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions()
			opts.Fetch.Deadline = 3 * time.Second
			for k, v := range tt.env {
				if k == "--s3-endpoint" {
					opts.Endpoint = v
					continue
				}
				t.Setenv(k, v)
			}
			_, err := Stat(tt.url, opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Stat(%s) = %v, want one line with %q", tt.url, err, tt.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), tt.url) {
				t.Errorf("Stat(%s) = %v, want the URL first", tt.url, err)
			}
		})
	}
}

// TestProfile: a profile of the shared files gives the endpoint and the
// keys, chosen with Options.Profile; Options.Endpoint overrides the
// endpoint.
func TestProfile(t *testing.T) {
	s := s3test.Start(t, t.TempDir())
	useServer(t, s)
	s.CreateBucket(t, "prof")
	data := imagetest.Data(200<<10, 25)
	s.Put(t, "prof", "disk.img", data)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	creds := filepath.Join(dir, "credentials")
	write(t, cfg, "[profile store]\nregion = eu-west-3\nendpoint_url = "+s.Endpoint+"\n[profile elsewhere]\nendpoint_url = http://127.0.0.1:1\n")
	write(t, creds, "[store]\naws_access_key_id = "+s3test.AccessKey+"\naws_secret_access_key = "+s3test.SecretKey+"\n[elsewhere]\naws_access_key_id = "+s3test.AccessKey+"\naws_secret_access_key = "+s3test.SecretKey+"\n")
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", cfg)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	bundle := filepath.Join(tlstest.Make(t).CAOnly, "ca-cert.pem")
	for _, tt := range []struct {
		name                      string
		profile, endpoint, bundle string
	}{
		{"profile", "store", "", ""},
		{"endpoint overrides", "elsewhere", s.Endpoint, ""},
		{"with a CA bundle", "store", "", bundle},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AWS_CA_BUNDLE", tt.bundle)
			opts := testOptions()
			opts.Profile, opts.Endpoint = tt.profile, tt.endpoint
			src, err := Open("s3://prof/disk.img", opts)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			imagetest.CheckReads(t, src, data)
		})
	}
	opts := testOptions()
	opts.Profile = "missing"
	if _, err := Stat("s3://prof/disk.img", opts); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Stat with a profile that does not exist: %v, want it named", err)
	}
}

// TestServerDown: reads while the store is down fail with EIO within the
// deadline, and succeed again once it is back.
func TestServerDown(t *testing.T) {
	s := s3test.Start(t, t.TempDir())
	useServer(t, s)
	s.CreateBucket(t, "down")
	data := imagetest.Data(1<<20, 26)
	s.Put(t, "down", "disk.img", data)
	opts := testOptions()
	opts.Fetch.Deadline = 2 * time.Second
	src, err := Open("s3://down/disk.img", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	s.Kill(t)
	buf := make([]byte, 4096)
	start := time.Now()
	_, err = src.ReadAt(buf, 300<<10)
	if took := time.Since(start); !errors.Is(err, syscall.EIO) || took > 2*opts.Fetch.Deadline {
		t.Errorf("read with the store down: %v after %v, want EIO within about %v", err, took, opts.Fetch.Deadline)
	}
	s.Restart(t)
	// The restarted store serves reads once its volume server is back with
	// the master: until then they fail as before.
	for deadline := time.Now().Add(time.Minute); ; {
		_, err := src.ReadAt(buf, 300<<10)
		if err == nil {
			if !bytes.Equal(buf, data[300<<10:300<<10+4096]) {
				t.Error("read after the store is back: the bytes differ")
			}
			break
		}
		if !errors.Is(err, syscall.EIO) || time.Now().After(deadline) {
			t.Fatalf("read after the store is back: %v", err)
		}
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
