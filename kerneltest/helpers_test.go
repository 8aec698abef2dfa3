//go:build kernel

package kerneltest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nbdloop returns the binary under test: $NBDLOOP_BIN (the Makefile builds
// it), never a copy found on PATH.
func nbdloop(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("NBDLOOP_BIN")
	if bin == "" {
		t.Fatal("NBDLOOP_BIN is not set (run the kernel tests through make check)")
	}
	return bin
}

// requireDriver fails (never skips) when the test cannot reach the driver.
func requireDriver(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("kernel tests must run as root")
	}
	if _, err := os.Stat("/sys/module/nbd"); err != nil {
		t.Fatal("the nbd driver is not loaded: kernel tests need it (scripts/kernel-tests.sh loads it)")
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs a command and returns its output and exit status; it fails the
// test only if the command cannot be started.
func run(t *testing.T, name string, args ...string) result {
	t.Helper()
	return runIn(t, "", name, args...)
}

// runIn is run in directory dir ("" for the current one).
func runIn(t *testing.T, dir, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return result{out.String(), errb.String(), code}
}

// must runs a command that has to succeed and returns its trimmed stdout.
func must(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := run(t, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func sh(t *testing.T, script string) string {
	t.Helper()
	return must(t, "/bin/sh", "-ec", script)
}

// attachDev attaches and registers a detach at cleanup; it returns the
// device name.
func attachDev(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, nbdloop(t), append([]string{"attach"}, args...)...)
	if r.code != 0 {
		t.Fatalf("nbdloop attach %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	dev := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(dev, "/dev/nbd") || strings.Contains(dev, "\n") {
		t.Fatalf("nbdloop attach printed %q, want one /dev/nbdN line", r.stdout)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(pidFile(dev)); err == nil {
			run(t, nbdloop(t), "detach", "--force", dev)
		}
	})
	return dev
}

func detach(t *testing.T, dev string) {
	t.Helper()
	must(t, nbdloop(t), "detach", dev)
	if _, err := os.Stat(pidFile(dev)); err == nil {
		t.Errorf("%s: pid file still present after detach", dev)
	}
}

func pidFile(dev string) string {
	return filepath.Join("/sys/block", filepath.Base(dev), "pid")
}

// serverPID reads the pid the kernel records for dev.
func serverPID(t *testing.T, dev string) int {
	t.Helper()
	b, err := os.ReadFile(pidFile(dev))
	if err != nil {
		t.Fatalf("%s: %v", dev, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// attachedDevices lists devices that have a server (a pid file).
func attachedDevices(t *testing.T) []string {
	t.Helper()
	m, _ := filepath.Glob("/sys/block/nbd*/pid")
	var devs []string
	for _, p := range m {
		devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(p)))
	}
	return devs
}

// serverProcesses lists the pids of nbdloop server and supervisor
// processes.
func serverProcesses(t *testing.T) []int {
	t.Helper()
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && (args[1] == "__serve" || args[1] == "__supervise") {
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(st), ") Z") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// requireClean checks that nothing is attached and no server runs: every
// test leaves the machine like this, including after errors.
func requireClean(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		devs, procs := attachedDevices(t), serverProcesses(t)
		if len(devs) == 0 && len(procs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: left behind devices %v and server processes %v", what, devs, procs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond until it returns nil, and fails the test if that has
// not happened within timeout, saying what it waited for and cond's last
// answer (what it saw instead).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scratch(t *testing.T) string {
	t.Helper()
	base := os.Getenv("SCRATCH")
	if base == "" {
		return t.TempDir()
	}
	d, err := os.MkdirTemp(base, "kt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func sha(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	var r io.Reader = f
	if n > 0 {
		r = io.LimitReader(f, n)
	}
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type listJSON struct {
	Devices []struct {
		Name        string `json:"name"`
		Size        int64  `json:"size"`
		Source      string `json:"source"`
		RO          bool   `json:"ro"`
		PID         int    `json:"pid"`
		State       string `json:"state"`
		Connections int    `json:"connections"`
		Supervisor  int    `json:"supervisor_pid"`
		Restarts    int    `json:"restarts"`
		LastExit    string `json:"last_exit"`
		Reason      string `json:"reason"`
	} `json:"devices"`
}

func listDevices(t *testing.T) listJSON {
	t.Helper()
	var l listJSON
	out := must(t, nbdloop(t), "list", "--json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	return l
}
