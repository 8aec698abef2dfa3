package script

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/sources"
)

// writeScript writes an executable /bin/sh script and returns its path.
// Tests do not run in parallel: a script written while another goroutine
// forks could be exec'd while a child still holds it open for writing
// (ETXTBSY).
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// disk writes n bytes of random data to a new file and returns its path
// and contents.
func disk(t testing.TB, dir string, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// nbdkitScript is an nbdkit sh plugin serving the file diskPath that logs
// every call, its arguments separated by '|', to logPath. overrides are
// case branches tried before the defaults.
func nbdkitScript(diskPath, logPath, overrides string) string {
	return fmt.Sprintf(`disk=%q
printf '%%s|' "$@" >> %q; echo >> %q
case "$1" in
%s
open) echo h1 ;;
get_size) stat -c %%s "$disk" ;;
can_write|can_flush|can_trim|can_zero) exit 0 ;;
pread) dd if="$disk" iflag=skip_bytes,count_bytes skip="$4" count="$3" bs=64K status=none ;;
pwrite) dd of="$disk" oflag=seek_bytes conv=notrunc seek="$4" bs=64K status=none ;;
trim|zero) dd if=/dev/zero of="$disk" iflag=count_bytes count="$3" oflag=seek_bytes seek="$4" conv=notrunc bs=64K status=none ;;
flush) ;;
*) exit 2 ;;
esac
`, diskPath, logPath, logPath, overrides)
}

func readLog(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func open(t *testing.T, path string, opts Options) *Source {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestOpenSequence checks nbdkit's calling convention: the calls made at
// open, per request and at close, with their arguments, and $tmpdir.
func TestOpenSequence(t *testing.T) {
	dir := t.TempDir()
	diskPath, _ := disk(t, dir, 1<<20)
	logPath := filepath.Join(dir, "log")
	path := writeScript(t, dir, "s.sh", nbdkitScript(diskPath, logPath, `
load) echo "$tmpdir" > `+dir+`/tmpdir ;;
magic_config_key) echo file ;;
config) ;;
thread_model) echo parallel ;;
block_size) echo 512 4K 1M ;;
is_rotational) exit 0 ;;
`))
	opts, err := ParseOptions("size=1M,magic.img,timeout=20s")
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, path, opts)
	tmpdir, err := os.ReadFile(filepath.Join(dir, "tmpdir"))
	if err != nil {
		t.Fatal(err)
	}
	td := strings.TrimSpace(string(tmpdir))
	if fi, err := os.Stat(td); err != nil || !fi.IsDir() || !strings.HasPrefix(td, os.TempDir()) {
		t.Errorf("$tmpdir = %q (%v), want a directory under %s", td, err, os.TempDir())
	}
	p := make([]byte, 4096)
	if _, err := s.ReadAt(p, 512); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt(p[:1000], 7); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{s.Flush(), s.Trim(4096, 512), s.Zero(8192, 1024, true), s.Zero(0, 512, false)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"load|", "config|size|1M|", "magic_config_key|", "config|file|magic.img|", "config_complete|",
		"thread_model|", "get_ready|", "after_fork|", "preconnect|false|", "open|false||false|",
		"get_size|h1|", "can_write|h1|", "can_flush|h1|", "can_trim|h1|", "can_zero|h1|", "is_rotational|h1|", "block_size|h1|",
		"pread|h1|4096|512|", "pwrite|h1|1000|7||", "flush|h1|", "trim|h1|512|4096||",
		"zero|h1|1024|8192|may_trim|", "zero|h1|512|0||",
		"flush|h1|", "close|h1|", "unload|",
	}
	if got := readLog(t, logPath); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := os.Stat(td); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("$tmpdir %s after Close: %v, want it removed", td, err)
	}
	wantCaps := sources.Caps{Flush: true, Trim: true, Zero: true, Parallel: true, Rotational: true}
	if got := s.Caps(); got != wantCaps {
		t.Errorf("Caps() = %v, want %v", got, wantCaps)
	}
	if got, want := s.BlockSizes(), (BlockSizes{512, 4096, 1 << 20}); got != want {
		t.Errorf("BlockSizes() = %v, want %v", got, want)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

// TestExitStatus checks what exit statuses 0, 1 (with errno names), 2, 3
// and the reserved ones mean for each method.
func TestExitStatus(t *testing.T) {
	tests := []struct {
		name      string
		overrides string
		opts      Options
		openErr   string // substring of Open's error
		caps      *sources.Caps
		op        func(s *Source) error
		wantErrno syscall.Errno // 0: op must succeed
		wantMsg   string
		check     func(t *testing.T, diskPath string, data []byte)
	}{
		{name: "can_write false is read-only", overrides: "can_write) exit 3 ;;",
			caps: &sources.Caps{ReadOnly: true},
			op:   func(s *Source) error { _, err := s.WriteAt([]byte{1}, 0); return err }, wantErrno: syscall.EPERM},
		{name: "can_write missing is read-only", overrides: "can_write) exit 2 ;;",
			caps: &sources.Caps{ReadOnly: true}},
		{name: "attach -r", opts: Options{ReadOnly: true},
			caps: &sources.Caps{ReadOnly: true},
			op:   func(s *Source) error { return s.Zero(0, 512, false) }, wantErrno: syscall.EPERM},
		{name: "all false", overrides: "can_write|can_flush|can_trim|can_zero|is_rotational) exit 3 ;;",
			caps: &sources.Caps{ReadOnly: true}},
		{name: "parallel and rotational", overrides: "thread_model) echo parallel ;;\nis_rotational) exit 0 ;;",
			caps: &sources.Caps{Flush: true, Trim: true, Zero: true, Parallel: true, Rotational: true}},
		{name: "other thread model", overrides: "thread_model) echo serialize_requests ;;",
			caps: &sources.Caps{Flush: true, Trim: true, Zero: true}},
		{name: "pwrite ENOSPC", overrides: "pwrite) echo 'ENOSPC Out of space' >&2; exit 1 ;;",
			op:        func(s *Source) error { _, err := s.WriteAt(make([]byte, 512), 0); return err },
			wantErrno: syscall.ENOSPC, wantMsg: "pwrite: ENOSPC Out of space"},
		{name: "errno name in lower case", overrides: "pwrite) echo enospc >&2; exit 1 ;;",
			op:        func(s *Source) error { _, err := s.WriteAt(make([]byte, 512), 0); return err },
			wantErrno: syscall.ENOSPC},
		{name: "errno name then tab", overrides: "flush) printf 'EPERM\\tnot allowed\\n' >&2; exit 1 ;;",
			op: func(s *Source) error { return s.Flush() }, wantErrno: syscall.EPERM, wantMsg: "not allowed"},
		{name: "EINVALID is EIO", overrides: "pread) echo 'EINVALID thing' >&2; exit 1 ;;",
			op:        func(s *Source) error { _, err := s.ReadAt(make([]byte, 512), 0); return err },
			wantErrno: syscall.EIO, wantMsg: "EINVALID thing"},
		{name: "nothing on stderr is EIO", overrides: "trim) exit 1 ;;",
			op: func(s *Source) error { return s.Trim(0, 512) }, wantErrno: syscall.EIO, wantMsg: "exit status 1"},
		{name: "reserved status 4 is an error", overrides: "pwrite) echo EROFS >&2; exit 4 ;;",
			op:        func(s *Source) error { _, err := s.WriteAt(make([]byte, 512), 0); return err },
			wantErrno: syscall.EROFS},
		{name: "status 100 is an error", overrides: "zero) echo EDQUOT >&2; exit 100 ;;",
			op: func(s *Source) error { return s.Zero(0, 512, false) }, wantErrno: syscall.EDQUOT},
		{name: "pread missing", overrides: "pread) exit 2 ;;",
			op:        func(s *Source) error { _, err := s.ReadAt(make([]byte, 512), 0); return err },
			wantErrno: syscall.EIO, wantMsg: "not provided"},
		{name: "pread false", overrides: "pread) exit 3 ;;",
			op:        func(s *Source) error { _, err := s.ReadAt(make([]byte, 512), 0); return err },
			wantErrno: syscall.EIO, wantMsg: "unexpected status 3"},
		{name: "flush missing succeeds", overrides: "flush) exit 2 ;;",
			op: func(s *Source) error { return s.Flush() }},
		{name: "trim missing succeeds", overrides: "trim) exit 2 ;;",
			op: func(s *Source) error { return s.Trim(0, 4096) }},
		{name: "can_trim false: trim does nothing", overrides: "can_trim) exit 3 ;;\ntrim) exit 1 ;;",
			caps: &sources.Caps{Flush: true, Zero: true},
			op:   func(s *Source) error { return s.Trim(0, 4096) },
			check: func(t *testing.T, diskPath string, data []byte) {
				checkFile(t, diskPath, data)
			}},
		{name: "zero missing writes zeros", overrides: "zero) exit 2 ;;",
			op:    func(s *Source) error { return s.Zero(1000, 3<<20, true) },
			check: zeroed(1000, 3<<20)},
		{name: "zero ENOTSUP writes zeros", overrides: "zero) echo ENOTSUP >&2; exit 1 ;;",
			op:    func(s *Source) error { return s.Zero(4095, 10, false) },
			check: zeroed(4095, 10)},
		{name: "zero EOPNOTSUPP writes zeros", overrides: "zero) echo EOPNOTSUPP no >&2; exit 1 ;;",
			op:    func(s *Source) error { return s.Zero(0, 512, true) },
			check: zeroed(0, 512)},
		{name: "can_zero false writes zeros", overrides: "can_zero) exit 3 ;;\nzero) exit 1 ;;",
			caps:  &sources.Caps{Flush: true, Trim: true},
			op:    func(s *Source) error { return s.Zero(7, 70000, false) },
			check: zeroed(7, 70000)},
		{name: "get_size missing", overrides: "get_size) exit 2 ;;", openErr: "get_size method is required"},
		{name: "get_size not a number", overrides: "get_size) echo lots ;;", openErr: `"lots": not a size`},
		{name: "get_size zero", overrides: "get_size) echo 0 ;;", openErr: "empty"},
		{name: "get_size with suffix", overrides: "get_size) echo 1M ;;\npread) head -c $3 /dev/zero ;;",
			op: func(s *Source) error {
				if s.Size() != 1<<20 {
					return fmt.Errorf("Size() = %d, want %d", s.Size(), 1<<20)
				}
				return nil
			}},
		{name: "open fails", overrides: "open) echo 'EACCES go away' >&2; exit 1 ;;", openErr: "open: EACCES go away"},
		{name: "config_complete fails", overrides: "config_complete) echo 'missing file= option' >&2; exit 1 ;;",
			openErr: "config_complete: missing file= option"},
		{name: "options but no config method", opts: Options{Params: []Param{{"a", "b"}}}, openErr: "takes no options"},
		{name: "bare option without magic key", opts: Options{Params: []Param{{"", "x"}}}, openErr: "no magic_config_key"},
		{name: "bad block size", overrides: "block_size) echo 3 512 1M ;;", openErr: "minimum block size 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			diskPath, data := disk(t, dir, 4<<20)
			path := writeScript(t, dir, "s.sh", nbdkitScript(diskPath, filepath.Join(dir, "log"), tt.overrides))
			s, err := Open(path, tt.opts)
			if tt.openErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.openErr) {
					t.Fatalf("Open() = %v, want an error containing %q", err, tt.openErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open() = %v", err)
			}
			defer s.Close()
			if tt.caps != nil && s.Caps() != *tt.caps {
				t.Errorf("Caps() = %v, want %v", s.Caps(), *tt.caps)
			}
			if tt.op == nil {
				return
			}
			err = tt.op(s)
			switch {
			case tt.wantErrno == 0 && err != nil:
				t.Fatalf("op = %v, want nil", err)
			case tt.wantErrno != 0 && !errors.Is(err, tt.wantErrno):
				t.Fatalf("op = %v, want an error wrapping %v (%d)", err, tt.wantErrno, int(tt.wantErrno))
			case tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg):
				t.Errorf("op = %q, want it to contain %q", err, tt.wantMsg)
			}
			if tt.check != nil {
				tt.check(t, diskPath, data)
			}
		})
	}
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Errorf("%s differs from the expected contents from byte %d (len %d, want %d)", path, i, len(got), len(want))
	}
}

// zeroed checks that [off, off+n) of the disk is zero and the rest as
// written by disk().
func zeroed(off, n int) func(t *testing.T, diskPath string, data []byte) {
	return func(t *testing.T, diskPath string, data []byte) {
		t.Helper()
		want := bytes.Clone(data)
		clear(want[off : off+n])
		checkFile(t, diskPath, want)
	}
}

// alive reports whether pid is a process that has not exited (zombies
// count as exited).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// pidsIn reads the pids a script wrote to path, one a line.
func pidsIn(t *testing.T, path string) []int {
	t.Helper()
	b, _ := os.ReadFile(path)
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		pids = append(pids, n)
	}
	return pids
}

// requireGone fails if any pid written to path is still running, after a
// moment for reparented processes to be reaped.
func requireGone(t *testing.T, path string) {
	t.Helper()
	pids := pidsIn(t, path)
	if len(pids) == 0 {
		t.Fatalf("%s: no pids recorded", path)
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d (from %s) still running", pid, path)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestRobustness checks scripts that misbehave: each request fails with
// EIO in bounded time and leaves no process behind, and the Source keeps
// working.
func TestRobustness(t *testing.T) {
	const timeout = 700 * time.Millisecond
	tests := []struct {
		name      string
		pread     string // the pread branch; $pids is a file for pids to check
		wantMsg   string
		wantAbove time.Duration // the request takes at least this long
	}{
		{name: "hang", pread: `echo $$ >> "$pids"; sleep 30 & echo $! >> "$pids"; wait`, wantMsg: "timed out after 700ms", wantAbove: timeout},
		{name: "background process keeps stdout open", pread: `head -c $3 /dev/zero; sleep 30 & echo $! >> "$pids"; exit 0`,
			wantMsg: "timed out", wantAbove: timeout},
		{name: "short read", pread: `head -c $(($3 - 1)) /dev/zero`, wantMsg: "printed 4095 bytes, want 4096"},
		{name: "long read", pread: `head -c $(($3 + 1)) /dev/zero`, wantMsg: "more than the 4096 bytes"},
		{name: "endless output", pread: `echo $$ >> "$pids"; yes`, wantMsg: "more than the 4096 bytes"},
		{name: "stdout closed early", pread: `exec >&-; sleep 0.1`, wantMsg: "printed 0 bytes"},
		{name: "crash", pread: `kill -SEGV $$`, wantMsg: "killed by signal 11"},
		{name: "no such interpreter", pread: `exec /nonexistent/interpreter`, wantMsg: "/nonexistent/interpreter: not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			diskPath, data := disk(t, dir, 1<<20)
			pids := filepath.Join(dir, "pids")
			over := fmt.Sprintf("pread) pids=%q; [ \"$4\" = 0 ] || { dd if=\"$disk\" iflag=skip_bytes,count_bytes skip=\"$4\" count=\"$3\" status=none; exit 0; }\n%s ;;", pids, tt.pread)
			path := writeScript(t, dir, "s.sh", nbdkitScript(diskPath, filepath.Join(dir, "log"), over))
			s := open(t, path, Options{Timeout: timeout})
			start := time.Now()
			_, err := s.ReadAt(make([]byte, 4096), 0)
			took := time.Since(start)
			if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("ReadAt = %v, want EIO with %q", err, tt.wantMsg)
			}
			if took < tt.wantAbove || took > timeout+2*time.Second {
				t.Errorf("ReadAt took %v, want %v to %v", took, tt.wantAbove, timeout+2*time.Second)
			}
			if _, err := os.Stat(pids); err == nil {
				requireGone(t, pids)
			}
			// The next request works.
			p := make([]byte, 4096)
			if _, err := s.ReadAt(p, 4096); err != nil || !bytes.Equal(p, data[4096:8192]) {
				t.Errorf("ReadAt after the failure = %v (data equal: %v)", err, bytes.Equal(p, data[4096:8192]))
			}
		})
	}
}

// TestHugeStderr: a script that succeeds while writing megabytes to stderr
// succeeds (stderr is drained, and only its start is kept).
func TestHugeStderr(t *testing.T) {
	dir := t.TempDir()
	diskPath, data := disk(t, dir, 1<<20)
	path := writeScript(t, dir, "s.sh", nbdkitScript(diskPath, filepath.Join(dir, "log"),
		`pread) head -c 8M /dev/zero >&2; dd if="$disk" iflag=skip_bytes,count_bytes skip="$4" count="$3" status=none ;;
pwrite) head -c 8M /dev/zero | tr '\0' x >&2; echo ENOSPC >&2; exit 1 ;;`))
	s := open(t, path, Options{})
	p := make([]byte, 1000)
	if _, err := s.ReadAt(p, 10); err != nil || !bytes.Equal(p, data[10:1010]) {
		t.Fatalf("ReadAt = %v (data equal: %v)", err, bytes.Equal(p, data[10:1010]))
	}
	_, err := s.WriteAt(p, 0)
	if !errors.Is(err, syscall.EIO) || len(err.Error()) > 2*maxMsg {
		t.Errorf("WriteAt = %.100v... (%d bytes), want EIO (the first stderr line is x's) in at most %d bytes", err, len(err.Error()), 2*maxMsg)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "plain.sh")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	endless := writeScript(t, dir, "endless.sh", "case $1 in get_size) yes ;; *) exit 2 ;; esac")
	hang := writeScript(t, dir, "hang.sh", "case $1 in load) sleep 30 ;; *) exit 2 ;; esac")
	tests := []struct {
		name, path string
		opts       Options
		want       string
	}{
		{name: "missing", path: filepath.Join(dir, "nope.sh"), want: "no such file"},
		{name: "not executable", path: notExec, want: "permission denied"},
		{name: "directory", path: dir, want: "permission denied"},
		{name: "endless get_size", path: endless, want: "printed more than 65536 bytes"},
		{name: "hanging load", path: hang, opts: Options{Timeout: 300 * time.Millisecond}, want: "load: timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.path, tt.opts)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) = nil error, want %q", tt.path, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open(%s) = %q, want it to contain %q", tt.path, err, tt.want)
			}
		})
	}
}

// TestProgramEnvironmentAndStrays: programs get PATH, HOME, LANG, $tmpdir
// and what env= names, none of the caller's other variables; a descendant
// that leaves the program's process group (setsid) is killed at the call's
// timeout, and one left behind by a call that succeeded is killed at Close.
func TestProgramEnvironmentAndStrays(t *testing.T) {
	t.Setenv("SECRET_TOKEN", "hunter2")
	t.Setenv("KEEP_ME", "kept")
	out := t.TempDir()
	prog := filepath.Join(t.TempDir(), "disk.sh")
	script := `#!/bin/sh
case "$1" in
get_size) echo 1048576 ;;
pread)
	env > ` + out + `/env.txt
	if [ "$4" = 0 ]; then
		setsid sh -c 'echo $$ > ` + out + `/timeout.pid; exec sleep 300' </dev/null >/dev/null 2>&1 &
		sleep 300
	fi
	setsid sh -c 'echo $$ > ` + out + `/left.pid; exec sleep 300' </dev/null >/dev/null 2>&1 &
	head -c "$3" /dev/zero ;;
*) exit 2 ;;
esac
`
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	opts, err := ParseOptions("timeout=2s,env=KEEP_ME")
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, prog, opts)
	readPid := func(name string) int {
		t.Helper()
		for i := 0; i < 100; i++ {
			b, _ := os.ReadFile(filepath.Join(out, name))
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s was not written", name)
		return 0
	}
	running := func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		i := bytes.LastIndexByte(b, ')')
		return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
	}
	buf := make([]byte, 4096)
	if _, err := s.ReadAt(buf, 0); err == nil {
		t.Fatal("a read that sleeps past the timeout succeeded")
	}
	if pid := readPid("timeout.pid"); running(pid) {
		t.Errorf("the setsid child (pid %d) of a timed-out call is still running", pid)
	}
	env, _ := os.ReadFile(filepath.Join(out, "env.txt"))
	for _, want := range []string{"PATH=", "KEEP_ME=kept", "tmpdir="} {
		if !bytes.Contains(env, []byte(want)) {
			t.Errorf("the program's environment lacks %s:\n%s", want, env)
		}
	}
	if bytes.Contains(env, []byte("SECRET_TOKEN")) {
		t.Errorf("the program saw the caller's SECRET_TOKEN:\n%s", env)
	}
	if _, err := s.ReadAt(buf, 4096); err != nil {
		t.Fatal(err)
	}
	left := readPid("left.pid")
	if !running(left) {
		t.Fatal("the daemon of a successful call is not running (the test proves nothing)")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if running(left) {
		t.Errorf("a daemon left by a call (pid %d) outlived Close", left)
	}
}
