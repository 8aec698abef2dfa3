package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// TestServeUsageErrors checks serve's bad command lines, found before
// anything is opened.
func TestServeUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"serve"}, "serve: nothing to serve: give a SOURCE or --export NAME=SOURCE"},
		{[]string{"serve", "a.img", "b.img"}, "serve: one SOURCE expected, got 2: a.img b.img (serve more as --export NAME=SOURCE)"},
		{[]string{"serve", "--export", "disk"}, `serve: --export "disk": not NAME=SOURCE`},
		{[]string{"serve", "--export", "a=memory:1M", "--export", "a=memory:2M"}, "serve: --export a: the name is given twice"},
		{[]string{"serve", "--export", "=memory:1M", "memory:1M"}, "serve: two default exports"},
		{[]string{"serve", "--handshake-timeout", "soon", "memory:1M"}, `serve: --handshake-timeout "soon": not a number of seconds`},
		{[]string{"serve", "--handshake-timeout", "0", "memory:1M"}, "serve: --handshake-timeout 0: must be at least 1 second"},
		{[]string{"serve", "--stop", "127.0.0.1:10809", "memory:1M"}, "serve: --stop ADDRESS takes nothing else"},
		{[]string{"serve", "--stop", "127.0.0.1:10809", "--background"}, "serve: --stop ADDRESS takes nothing else"},
		{[]string{"serve", "--max-connections", "-1", "memory:1M"}, "serve: --max-connections -1: use a number of clients, or 0 for no limit"},
		{[]string{"serve", "--max-connections", "many", "memory:1M"}, `serve: invalid value "many" for flag -max-connections`},
		{[]string{"serve", "--idle-timeout", "soon", "memory:1M"}, `serve: --idle-timeout "soon": not a number of seconds (e.g. 300 or 5m)`},
		{[]string{"serve", "--cache-size", "12Q", "memory:1M"}, `serve: --cache-size "12Q": unknown suffix "Q"`},
		{[]string{"serve", "memory:0"}, "serve: memory:0: size must be greater than 0"},
		{[]string{"serve", "--bogus", "memory:1M"}, "serve: flag provided but not defined: -bogus (see nbdloop serve --help)"},
	}
	for _, tt := range tests {
		code, _, stderr := runArgs(t, tt.args...)
		if code != exitUsage || !strings.HasPrefix(stderr, "nbdloop: ") || !strings.Contains(stderr, tt.want) {
			t.Errorf("nbdloop %s: status %d, stderr %q; want %d and %q", strings.Join(tt.args, " "), code, stderr, exitUsage, tt.want)
		}
	}
}

// server is a running `nbdloop serve`.
type server struct {
	t      *testing.T
	cmd    *exec.Cmd
	addrs  map[string]string // network -> address, from its log
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
}

func (s *server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

var listeningLine = regexp.MustCompile(`listening on (tcp|unix) (\S+)`)

// startServe runs bin serve args and returns once it listens.
func startServe(t *testing.T, bin string, args ...string) *server {
	t.Helper()
	s := &server{t: t, cmd: exec.Command(bin, append([]string{"serve"}, args...)...), addrs: map[string]string{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	s.cmd.Stderr = pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			s.mu.Lock()
			s.stderr.WriteString(sc.Text() + "\n")
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil {
				s.addrs[m[1]] = m[2]
			}
			n := len(s.addrs)
			s.mu.Unlock()
			if !signalled && n > 0 && strings.Count(strings.Join(args, " "), "--listen")+strings.Count(strings.Join(args, " "), "--unix") <= n {
				signalled = true
				close(ready)
			}
		}
	}()
	go func() {
		s.cmd.Wait()
		pw.Close()
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
	select {
	case <-ready:
	case <-s.done:
		t.Fatalf("nbdloop serve %s exited before listening:\n%s", strings.Join(args, " "), s.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("nbdloop serve %s did not listen within 30s:\n%s", strings.Join(args, " "), s.log())
	}
	return s
}

// stop sends SIGTERM and checks that serve exits 0.
func (s *server) stop() {
	s.t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("nbdloop serve did not exit after SIGTERM:\n%s", s.log())
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		s.t.Fatalf("nbdloop serve exited %d after SIGTERM:\n%s", code, s.log())
	}
}

// uri is the NBD URI of export name on s's Unix socket.
func (s *server) uri(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "nbd+unix:///" + name + "?socket=" + s.addrs["unix"]
}

// client runs a client command and returns its output; it must succeed.
func client(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	// nbdsh and nbdinfo's python parts run python3 from PATH; Debian's
	// python3-libnbd is for Debian's python3, which another python3
	// earlier in PATH (pyenv) would hide.
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out)
}

func mustContain(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, text)
		}
	}
}

// TestServeClients serves memory, a file and an xz image to clients
// nbdloop did not write (qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh), over
// a Unix socket and TCP, and checks that bad clients cost only their
// connection.
func TestServeClients(t *testing.T) {
	tooltest.Require(t, "qemu-img", "qemu-io", "nbdinfo", "nbdcopy", "nbdsh", "xz")
	dir := t.TempDir()
	bin := filepath.Join(dir, "nbdloop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The image: 8 MiB of patterns, written by qemu-io, and its xz.
	img := filepath.Join(dir, "disk.img")
	client(t, exec.Command("qemu-img", "create", "-q", "-f", "raw", img, "8M"))
	client(t, exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xc3 3M 2M", "-c", "write -P 0x11 7M 512k", img))
	client(t, exec.Command("xz", "-k", "-T1", "--block-size=1MiB", img))
	sock := func(name string) string { return filepath.Join(dir, name) }

	t.Run("memory", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("mem.sock"), "memory:64M")
		mustContain(t, "qemu-img info", client(t, exec.Command("qemu-img", "info", s.uri(""))), "virtual size: 64 MiB (67108864 bytes)")
		out := client(t, exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0xab 0 1M", "-c", "read -P 0xab 0 1M", s.uri("")))
		mustContain(t, "qemu-io", out, "wrote 1048576/1048576 bytes at offset 0", "read 1048576/1048576 bytes at offset 0")
		s.stop()
		mustContain(t, "serve's log", s.log(), `export "": memory:67108864 (67108864 bytes`, "listening on unix "+sock("mem.sock"), `client unix:`+sock("mem.sock")+`: export ""`)
	})

	t.Run("file: convert, compare, nbdcopy, flush at exit", func(t *testing.T) {
		work := filepath.Join(dir, "work.img")
		client(t, exec.Command("cp", img, work))
		s := startServe(t, bin, "--unix", sock("file.sock"), "--export", "work="+work, "--export", "scratch=memory:8M")
		out := filepath.Join(dir, "converted.img")
		client(t, exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", s.uri("work"), out))
		client(t, exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", out, img))
		// nbdcopy in (file to export) and out (export to file).
		client(t, exec.Command("nbdcopy", img, s.uri("scratch")))
		copied := filepath.Join(dir, "copied.img")
		client(t, exec.Command("nbdcopy", s.uri("scratch"), copied))
		client(t, exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", copied, img))
		// A write through the server is in the file once serve has exited.
		client(t, exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0xee 5M 64k", s.uri("work")))
		s.stop()
		mustContain(t, "qemu-io on the file", client(t, exec.Command("qemu-io", "-f", "raw", "-c", "read -P 0xee 5M 64k", "-c", "read -P 0xc3 3M 2M", work)),
			"read 65536/65536 bytes at offset 5242880", "read 2097152/2097152 bytes at offset 3145728")
	})

	t.Run("xz image, read-only", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("xz.sock"), img+".xz")
		client(t, exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", s.uri(""), img))
		info := client(t, exec.Command("nbdinfo", s.uri("")))
		mustContain(t, "nbdinfo", info, "is_read_only: true", "export-size: 8388608", "description: "+img+".xz (xz)")
		cmd := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", s.uri(""))
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("qemu-io wrote to the xz export:\n%s", out)
		}
		s.stop()
	})

	t.Run("nbdinfo --list and block sizes", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("list.sock"), "--export", "first=memory:1M", "--export", "second="+img, "-r")
		list := client(t, exec.Command("nbdinfo", "--list", "--json", s.uri("")))
		var l struct {
			Exports []struct {
				Name        string `json:"export-name"`
				Description string `json:"description"`
				Size        int64  `json:"export-size"`
				ReadOnly    bool   `json:"is_read_only"`
				Min         int64  `json:"block_size_minimum"`
				Preferred   int64  `json:"block_size_preferred"`
				Max         int64  `json:"block_size_maximum"`
			} `json:"exports"`
		}
		if err := json.Unmarshal([]byte(list), &l); err != nil {
			t.Fatalf("nbdinfo --list --json: %v\n%s", err, list)
		}
		got := fmt.Sprint(l.Exports)
		want := fmt.Sprintf("[{first memory:1048576 1048576 true 1 4096 33554432} {second %s 8388608 true 1 4096 33554432}]", img)
		if got != want {
			t.Errorf("nbdinfo --list shows %s, want %s", got, want)
		}
		// nbdsh asks for the block sizes itself; the default export is
		// the first.
		out := client(t, exec.Command("nbdsh", "-u", s.uri(""), "-c",
			"print(h.get_export_name(), h.get_size(), h.get_block_size(nbd.SIZE_MINIMUM), h.get_block_size(nbd.SIZE_PREFERRED), h.get_block_size(nbd.SIZE_MAXIMUM), h.is_read_only(), h.can_multi_conn())"))
		mustContain(t, "nbdsh", out, "1048576 1 4096 33554432 True True")
		s.stop()
		s = startServe(t, bin, "--unix", sock("dio.sock"), "--direct-io", img)
		mustContain(t, "nbdinfo with --direct-io", client(t, exec.Command("nbdinfo", s.uri(""))), "block_size_minimum: 512", "block_size_preferred: 4096", "block_size_maximum: 33554432")
		s.stop()
	})

	t.Run("TCP and bad clients", func(t *testing.T) {
		s := startServe(t, bin, "--listen", "127.0.0.1:0", "--handshake-timeout", "1", img+".xz")
		addr := s.addrs["tcp"]
		stalled, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer stalled.Close()
		for _, bad := range [][]byte{
			[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
			optionBytes(3, 7, 0xffffffff), // NBD_OPT_GO with 4 GiB of data
		} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Write(bad)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil && !strings.Contains(err.Error(), "reset") {
				t.Errorf("bad client [% x]: the connection stayed open: %v", bad[:8], err)
			}
			c.Close()
		}
		uri := "nbd://" + addr + "/"
		mustContain(t, "qemu-img info over TCP", client(t, exec.Command("qemu-img", "info", uri)), "virtual size: 8 MiB (8388608 bytes)")
		client(t, exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", uri, img))
		stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, stalled); err != nil {
			t.Errorf("the stalled client was not cut off: %v", err)
		}
		s.stop()
		mustContain(t, "serve's log", s.log(), "handshake failed: nbd: protocol error: unknown client flags 0x47455420",
			"handshake failed: nbd: protocol error: NBD_OPT_GO with 4294967295 bytes of data",
			"handshake failed: nbd: the client did not finish the handshake in time (1s)", `client 127.0.0.1:`)
	})
}

// optionBytes is a client's flags, then an option header announcing
// length bytes of data (none follow).
func optionBytes(flags, opt, length uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, flags)
	b = binary.BigEndian.AppendUint64(b, 0x49484156454f5054)
	b = binary.BigEndian.AppendUint32(b, opt)
	return binary.BigEndian.AppendUint32(b, length)
}
