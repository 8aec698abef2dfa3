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
	want := []byte(name + "=" + value + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	killed := 0
	var ours []int
	var pfds []int // of the killed, to wait for their end
	defer func() {
		for _, fd := range pfds {
			unix.Close(fd)
		}
	}()
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
				killed++
				pfds = append(pfds, pfd)
				if parentOf(pid) == self {
					ours = append(ours, pid)
				}
				continue
			}
		}
		unix.Close(pfd)
	}
	// A pidfd turns readable when its process has ended: return only
	// once the killed are gone (SIGKILL is delivered asynchronously).
	deadline := time.Now().Add(time.Second)
	for _, fd := range pfds {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for time.Now().Before(deadline) {
			if n, err := unix.Poll(fds, int(time.Until(deadline)/time.Millisecond)+1); n > 0 || (err != nil && err != unix.EINTR) {
				break
			}
		}
	}
	// Reparented to us (we are a subreaper, or its parent was us): reap
	// it, or it stays a zombie as long as we run.
	deadline = time.Now().Add(time.Second)
	for _, pid := range ours {
		for {
			var ws unix.WaitStatus
			if p, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); p != 0 || err != nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return killed
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
