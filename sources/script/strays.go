package script

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Every program runs with two marks in its environment, which whatever it
// starts inherits: markVar, the same for all the programs of one Source,
// and callVar, its own. Killing a program's process group does not reach a
// descendant that left the group (setsid, a daemon); the marks do, wherever
// it was reparented: on a call's timeout every process with that call's
// mark is killed, and at Close every process with the Source's. (A
// descendant that clears its whole environment escapes: that is a program
// working against its user, not a careless one.)
const (
	markVar = "NBDLOOP_EXEC_ID"
	callVar = "NBDLOOP_EXEC_CALL"
)

// newMark returns a random mark.
func newMark() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// baseEnv are the variables a program gets from nbdloop's environment
// whatever env= says; the rest of the caller's environment (secrets
// included) stays out.
var baseEnv = [...]string{"PATH", "HOME", "LANG", "LC_ALL"}

// defaultPath is PATH for a program when nbdloop has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// programEnv is the environment of a program: baseEnv and the variables
// named by extra, as nbdloop has them (unset ones are left out).
func programEnv(extra []string) []string {
	var env []string
	seen := map[string]bool{}
	for _, names := range [][]string{baseEnv[:], extra} {
		for _, n := range names {
			if seen[n] {
				continue
			}
			seen[n] = true
			if v, ok := os.LookupEnv(n); ok {
				env = append(env, n+"="+v)
			} else if n == "PATH" {
				env = append(env, "PATH="+defaultPath)
			}
		}
	}
	return env
}

// killMarked kills every process whose environment holds name=value, other
// than this one, and reaps those that were reparented to this process. It
// returns how many it killed.
func killMarked(name, value string) int {
	pfds, ours := signalMarked([]byte(name + "=" + value + "\x00"))
	defer func() {
		for _, fd := range pfds {
			unix.Close(fd)
		}
	}()
	awaitEnd(pfds)
	reap(ours)
	return len(pfds)
}

// signalMarked sends SIGKILL to every process but this one whose
// environment holds want (NAME=VALUE and its NUL). It returns a pidfd of
// each process it killed, and the pids of those whose parent is this
// process.
func signalMarked(want []byte) (pfds, ours []int) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, nil
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		// Pin the process first, then check its mark: a pid reused after
		// the check could not be signalled through this pidfd.
		pfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		if env, err := os.ReadFile("/proc/" + e.Name() + "/environ"); err == nil &&
			(bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...))) {
			if unix.PidfdSendSignal(pfd, syscall.SIGKILL, nil, 0) == nil {
				pfds = append(pfds, pfd)
				if parentOf(pid) == self {
					ours = append(ours, pid)
				}
				continue
			}
		}
		unix.Close(pfd)
	}
	return pfds, ours
}

// awaitEnd returns once the processes of pfds have ended (SIGKILL is
// delivered asynchronously), or after a second. A pidfd turns readable
// when its process has ended.
func awaitEnd(pfds []int) {
	deadline := time.Now().Add(time.Second)
	for _, fd := range pfds {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for time.Now().Before(deadline) {
			if n, err := unix.Poll(fds, int(time.Until(deadline)/time.Millisecond)+1); n > 0 || (err != nil && err != unix.EINTR) {
				break
			}
		}
	}
}

// reap waits for the killed processes that were reparented to us (we are
// a subreaper, or their parent was us), for a second at most: unreaped,
// each stays a zombie as long as we run.
func reap(pids []int) {
	deadline := time.Now().Add(time.Second)
	for _, pid := range pids {
		for {
			var ws unix.WaitStatus
			if p, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); p != 0 || err != nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// parentOf returns the parent pid of pid (0 if unknown).
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	return ppid
}
