package nginxtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// Server is an nginx serving the files beneath Root at URL
// (http://127.0.0.1:PORT, without a trailing slash).
type Server struct {
	Root string
	URL  string
	stop func()
}

// Start runs nginx in the foreground, with its configuration, logs, pid
// file and temporary directories in prefix (an empty directory that the
// caller owns; Root is prefix/www), until the test ends. It returns once
// nginx accepts connections, and fails the test if nginx exits first or
// does not listen within ten seconds.
func Start(t testing.TB, prefix string) *Server {
	t.Helper()
	tooltest.Require(t, "nginx")
	s := &Server{Root: filepath.Join(prefix, "www")}
	if err := os.Mkdir(s.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s.URL = "http://" + addr
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
`, prefix, addr, s.Root)
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
	exited := make(chan struct{}) // closed once nginx has exited
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(s.stop)
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			t.Fatalf("nginx exited: %v: %s%s", waitErr, stderr.String(), log)
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx does not listen after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills nginx and waits for it to exit (a server gone down); the
// end of the test does too.
func (s *Server) Stop() { s.stop() }

// Put writes a file for nginx to serve, atomically, with the given
// modification time (nginx's ETag is made of it and the size), and returns
// its URL.
func (s *Server) Put(t testing.TB, name string, data []byte, mtime time.Time) string {
	t.Helper()
	path := filepath.Join(s.Root, name)
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
	return s.URL + "/" + name
}
