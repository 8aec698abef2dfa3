package httpsrc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
	"github.com/nbdloop/nbdloop/sources/xz"
)

// nginx runs Debian's nginx on a free loopback port, serving the files of
// a temporary directory (Root), until the test ends.
type nginx struct {
	Root string
	URL  string
}

func startNginx(t *testing.T) *nginx {
	t.Helper()
	tooltest.Require(t, "nginx")
	prefix := t.TempDir()
	n := &nginx{Root: filepath.Join(prefix, "www")}
	if err := os.Mkdir(n.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	n.URL = "http://" + addr
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s;
		root %[3]s;
	}
}
`, prefix, addr, n.Root)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("nginx", "-p", prefix, "-c", confPath, "-e", filepath.Join(prefix, "error.log"))
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			t.Fatalf("nginx exited: %v: %s%s", err, stderr.String(), log)
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return n
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx does not listen after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// put writes a file for nginx to serve, with the given modification time
// (nginx's ETag is made of it and the size).
func (n *nginx) put(t *testing.T, name string, data []byte, mtime time.Time) string {
	t.Helper()
	path := filepath.Join(n.Root, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return n.URL + "/" + name
}

func TestNginx(t *testing.T) {
	ng := startNginx(t)
	data := imagetest.Data(3<<20+4096, 11)
	raw := ng.put(t, "disk.img", data, time.Unix(1700000000, 0))
	t.Run("Conformance", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sources.Source {
			src, err := Open(raw, testOptions(Options{}))
			if err != nil {
				t.Fatal(err)
			}
			return src
		}, data)
	})
	t.Run("Pinned by ETag", func(t *testing.T) {
		src, err := Open(raw, testOptions(Options{}))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if pin := src.Object().Pin(); !strings.HasPrefix(pin, `etag:"`) {
			t.Errorf("Pin() = %q, want nginx's ETag", pin)
		}
	})
	t.Run("xz", func(t *testing.T) {
		url := ng.put(t, "disk.img.xz", imagetest.XZ(t, data, "--block-size=256KiB"), time.Unix(1700000000, 0))
		src, err := Open(url, testOptions(Options{CacheSize: 2 << 20}))
		if err != nil {
			t.Fatal(err)
		}
		img, err := xz.Open(src, src.Size(), xz.Options{CacheSize: 4 << 20})
		if err != nil {
			src.Close()
			t.Fatal(err)
		}
		defer img.Close()
		imagetest.CheckReads(t, img, data)
		src.Close()
	})
	t.Run("Replaced", func(t *testing.T) {
		url := ng.put(t, "replaced.img", data, time.Unix(1700000000, 0))
		var log logLines
		src, err := Open(url, testOptions(Options{Logf: log.logf}))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		buf := make([]byte, 4096)
		if _, err := src.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:4096]) {
			t.Fatalf("first read = %v, or wrong bytes", err)
		}
		// The same size, another modification time: another ETag.
		ng.put(t, "replaced.img", imagetest.Data(len(data), 12), time.Unix(1700000100, 0))
		if _, err := src.ReadAt(buf, 2<<20); !errors.Is(err, ErrReplaced) || !errors.Is(err, syscall.EIO) {
			t.Errorf("read of the replaced object = %v, want ErrReplaced (EIO)", err)
		}
		if lines := log.get(); len(lines) != 1 || !strings.Contains(lines[0], "412") {
			t.Errorf("log = %q, want one line with nginx's 412", lines)
		}
	})
}
