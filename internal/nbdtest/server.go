package nbdtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// Server is an NBD server process listening on a Unix socket.
type Server struct {
	// Name is the program (nbdkit, qemu-nbd, nbd-server).
	Name string
	// Socket is the path of the Unix socket it listens on.
	Socket string
	// URI is nbd+unix:///EXPORT?socket=SOCKET for its export.
	URI string

	t    testing.TB
	args []string
	// pidFile, when set, is where a server that daemonizes (nbd-server)
	// writes its process ID; it leads its own process group.
	pidFile string
	mu      sync.Mutex
	cmd     *exec.Cmd
	pid     int // the process (group) to kill
	log     *os.File
}

// startTimeout is how long a server may take to listen on its socket, on
// a loaded machine.
const startTimeout = time.Minute

// Nbdkit starts `nbdkit -f -U SOCKET PLUGIN [ARGS...]` (a plugin and its
// parameters, such as "memory", "64M"), serving its default export.
func Nbdkit(t testing.TB, plugin string, args ...string) *Server {
	t.Helper()
	tooltest.Require(t, "nbdkit")
	sock := SocketPath(t)
	return Command(t, sock, "", append([]string{"nbdkit", "-f", "-U", sock, plugin}, args...)...)
}

// QemuNBD starts `qemu-nbd -k SOCKET -f raw -t FILE`, serving file under
// its default export (qemu-nbd's export name is "").
func QemuNBD(t testing.TB, file string) *Server {
	t.Helper()
	tooltest.Require(t, "qemu-nbd")
	sock := SocketPath(t)
	return Command(t, sock, "", "qemu-nbd", "-k", sock, "-f", "raw", "-t", "--cache=writeback", file)
}

// NBDServer starts nbd-server in the foreground with a configuration that
// serves file as the export "disk", with flushes, FUA and trims.
func NBDServer(t testing.TB, file string) *Server {
	t.Helper()
	tooltest.Require(t, "nbd-server")
	sock := SocketPath(t)
	conf := filepath.Join(filepath.Dir(sock), "nbd-server.conf")
	text := fmt.Sprintf("[generic]\n\tunixsock = %s\n\tallowlist = false\n[disk]\n\texportname = %s\n\tflush = true\n\tfua = true\n\ttrim = true\n", sock, file)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{Name: "nbd-server", Socket: sock, URI: "nbd+unix:///disk?socket=" + sock, t: t,
		pidFile: filepath.Join(filepath.Dir(sock), "pid")}
	// Debian's nbd-server 3.24 has no -n (--nodaemon): it daemonizes
	// into its own session, and forks a child per client.
	s.args = []string{"nbd-server", "-C", conf, "-p", s.pidFile}
	t.Cleanup(s.Kill)
	s.Start()
	return s
}

// SocketPath returns a socket path in a new temporary directory, short
// enough for sun_path.
func SocketPath(t testing.TB) string {
	dir, err := os.MkdirTemp("", "nbdtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s")
}

// Command starts args, a server that stays in the foreground and listens
// on the Unix socket sock (a SocketPath), serving export, like the servers
// above: Kill and Start apply, and it is killed when the test ends.
func Command(t testing.TB, sock, export string, args ...string) *Server {
	t.Helper()
	s := &Server{Name: filepath.Base(args[0]), Socket: sock, URI: "nbd+unix:///" + export + "?socket=" + sock, t: t, args: args}
	t.Cleanup(s.Kill)
	s.Start()
	return s
}

// Start starts the server (again, after Kill) and waits until its socket
// accepts connections; it fails the test if it does not within a minute.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("%s: started twice", s.Name)
	}
	os.Remove(s.Socket)
	if s.pidFile != "" {
		os.Remove(s.pidFile)
	}
	log, err := os.CreateTemp(filepath.Dir(s.Socket), "log")
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that Kill ends the children that
	// nbd-server forks per client too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		s.t.Fatalf("%s: %v", s.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.log = cmd, log
	deadline := time.Now().Add(startTimeout)
	for {
		if c, err := net.Dial("unix", s.Socket); err == nil {
			c.Close()
			if s.pidFile != "" {
				s.pid = s.readPID(deadline)
			} else {
				s.pid = cmd.Process.Pid
			}
			return
		}
		wait := exited
		if s.pidFile != "" {
			wait = nil // the daemon's parent exits at once
		}
		select {
		case <-wait:
			out, _ := os.ReadFile(log.Name())
			s.cmd = nil
			s.t.Fatalf("%s exited before listening on %s: %s", s.Name, s.Socket, out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not listening on %s after %v", s.Name, s.Socket, startTimeout)
		}
	}
}

// Kill kills the server's process group with SIGKILL and waits for the
// server to exit; it does nothing when the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if s.pid > 0 {
		syscall.Kill(-s.pid, syscall.SIGKILL)
		for i := 0; i < 500 && alive(s.pid); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	s.log.Close()
	s.cmd = nil
}

// Log returns what the server has printed so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	b, _ := os.ReadFile(s.log.Name())
	return string(b)
}

// readPID reads a daemon's process ID from its pid file, waiting for it
// until deadline.
func (s *Server) readPID(deadline time.Time) int {
	for {
		b, err := os.ReadFile(s.pidFile)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				return pid
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: no process ID in %s", s.Name, s.pidFile)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether process pid exists and is not a zombie (a
// daemon's zombie waits for an init that may be slow to reap it).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
