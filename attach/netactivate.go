package attach

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// Socket activation (sd_listen_fds(3)): a service manager (systemd, or
// libnbd's nbd_connect_systemd_socket_activation) listens, then starts
// the server with the listening sockets as file descriptors 3, 4, ...,
// LISTEN_FDS their count and LISTEN_PID the server's process ID, so that
// a variable left in the environment of some other process is ignored.
const (
	listenPIDEnv     = "LISTEN_PID"
	listenFDsEnv     = "LISTEN_FDS"
	listenFDNamesEnv = "LISTEN_FDNAMES"
	firstActivatedFD = 3
	// maxActivatedFDs bounds LISTEN_FDS: systemd passes one socket per
	// ListenStream= line.
	maxActivatedFDs = 64
)

// SocketActivated reports whether this process was started by socket
// activation: LISTEN_PID is its process ID and LISTEN_FDS is set.
func SocketActivated() bool {
	pid, err := strconv.Atoi(os.Getenv(listenPIDEnv))
	return err == nil && pid == os.Getpid() && os.Getenv(listenFDsEnv) != ""
}

// activatedListeners takes the listening sockets that socket activation
// passed: LISTEN_FDS of them from descriptor 3 on, each of which must be a
// listening stream socket. It unsets LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES, so that the programs it starts (exec: sources) do not
// see them, and marks the descriptors close-on-exec.
func activatedListeners() ([]net.Listener, error) {
	count := os.Getenv(listenFDsEnv)
	for _, v := range []string{listenPIDEnv, listenFDsEnv, listenFDNamesEnv} {
		os.Unsetenv(v)
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 || n > maxActivatedFDs {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a count of sockets from 1 to %d (start serve from a socket unit, or unset LISTEN_PID)", count, maxActivatedFDs)
	}
	lns := make([]net.Listener, 0, n)
	for fd := firstActivatedFD; fd < firstActivatedFD+n; fd++ {
		ln, err := activatedListener(fd)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("socket activation: descriptor %d: %w (pass listening stream sockets: ListenStream= in the socket unit)", fd, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// activatedListener makes a listener of descriptor fd, which it then
// closes (the listener has a copy); on error fd is left open.
func activatedListener(fd int) (net.Listener, error) {
	syscall.CloseOnExec(fd)
	accepting, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("not a socket: %w", err)
	}
	if accepting == 0 {
		return nil, errors.New("a socket that is not listening")
	}
	f := os.NewFile(uintptr(fd), "LISTEN_FDS socket")
	defer f.Close()
	return net.FileListener(f)
}
