package script

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// persistentScript is a persistent-mode program in sh serving the file
// diskPath: it appends its pid to pidsPath when it starts and each request
// line to logPath. pre runs before each request is dispatched; overrides
// are case branches tried before the defaults.
func persistentScript(diskPath, pidsPath, logPath, pre, overrides string) string {
	return fmt.Sprintf(`disk=%q
echo $$ >> %q
while read -r cmd count off flags; do
echo "$cmd $count $off $flags|$*" >> %q
%s
case "$cmd" in
%s
get_size) echo "0 $(stat -c %%s "$disk")" ;;
can_write|can_flush|can_trim|can_zero) echo 0 ;;
is_rotational) echo 3 ;;
block_size) echo 0 512 64K 32M ;;
pread) echo 0; dd if="$disk" iflag=skip_bytes,count_bytes skip="$off" count="$count" bs=64K status=none ;;
pwrite) dd of="$disk" bs="$count" count=1 iflag=fullblock oflag=seek_bytes seek="$off" conv=notrunc status=none; echo 0 ;;
zero|trim) dd if=/dev/zero of="$disk" iflag=count_bytes count="$count" oflag=seek_bytes seek="$off" conv=notrunc bs=64K status=none; echo 0 ;;
flush) echo 0 ;;
*) echo 2 ;;
esac
done
`, diskPath, pidsPath, logPath, pre, overrides)
}

// logger collects Logf lines.
type logger struct {
	mu    sync.Mutex
	lines []string
}

func (l *logger) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestPersistentRequests checks the request lines and the replies of
// persistent mode, one method after the other, and that the program is
// started once, with the options as arguments.
func TestPersistentRequests(t *testing.T) {
	dir := t.TempDir()
	diskPath, data := disk(t, dir, 1<<20)
	pids, logPath := filepath.Join(dir, "pids"), filepath.Join(dir, "log")
	path := writeScript(t, dir, "p.sh", persistentScript(diskPath, pids, logPath, "", `noise) ;;`))
	var lg logger
	opts, err := ParseOptions("persistent,file=x,bare")
	if err != nil {
		t.Fatal(err)
	}
	opts.Logf = lg.logf
	s := open(t, path, opts)
	if want := (sources.Caps{Flush: true, Trim: true, Zero: true}); s.Caps() != want {
		t.Errorf("Caps() = %v, want %v", s.Caps(), want)
	}
	if want := (BlockSizes{512, 64 << 10, 32 << 20}); s.BlockSizes() != want {
		t.Errorf("BlockSizes() = %v, want %v", s.BlockSizes(), want)
	}
	p := make([]byte, 70000)
	if _, err := s.ReadAt(p, 3); err != nil || !bytes.Equal(p, data[3:70003]) {
		t.Fatalf("ReadAt = %v (data equal: %v)", err, bytes.Equal(p, data[3:70003]))
	}
	w := bytes.Repeat([]byte("nbdloop\n"), 1000)
	if _, err := s.WriteAt(w, 5000); err != nil {
		t.Fatal(err)
	}
	copy(data[5000:], w)
	for _, err := range []error{s.Flush(), s.Trim(100, 50), s.Zero(200, 20, true), s.Zero(300, 30, false)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	clear(data[100:150])
	clear(data[200:220])
	clear(data[300:330])
	if _, err := s.ReadAt(p, 0); err != nil || !bytes.Equal(p, data[:70000]) {
		t.Fatalf("ReadAt after writes = %v (data equal: %v)", err, bytes.Equal(p, data[:70000]))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"get_size   |file=x bare", "can_write   |file=x bare", "can_flush   |file=x bare", "can_trim   |file=x bare",
		"can_zero   |file=x bare", "is_rotational   |file=x bare", "block_size   |file=x bare",
		"pread 70000 3 |file=x bare", "pwrite 8000 5000 |file=x bare", "flush   |file=x bare",
		"trim 50 100 |file=x bare", "zero 20 200 may_trim|file=x bare", "zero 30 300 |file=x bare",
		"pread 70000 0 |file=x bare", "flush   |file=x bare",
	}
	if got := readLog(t, logPath); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := len(pidsIn(t, pids)); n != 1 {
		t.Errorf("the program started %d times, want once", n)
	}
	requireGone(t, pids)
}

// TestPersistentStatus checks the status line's meanings: errors with
// errno names, 2 (missing) and 3 (false), without restarting the program.
func TestPersistentStatus(t *testing.T) {
	tests := []struct {
		name      string
		overrides string
		op        func(s *Source) error
		wantErrno syscall.Errno
		wantMsg   string
		check     func(t *testing.T, diskPath string, data []byte)
	}{
		{name: "ENOSPC", overrides: `pwrite) dd of=/dev/null bs="$count" count=1 iflag=fullblock status=none; echo "1 ENOSPC disk full" ;;`,
			op:        func(s *Source) error { _, err := s.WriteAt(make([]byte, 4096), 0); return err },
			wantErrno: syscall.ENOSPC, wantMsg: "pwrite: ENOSPC disk full"},
		{name: "error without errno", overrides: `flush) echo "1 it broke" ;;`,
			op: func(s *Source) error { return s.Flush() }, wantErrno: syscall.EIO, wantMsg: "it broke"},
		{name: "bare error", overrides: `flush) echo 1 ;;`,
			op: func(s *Source) error { return s.Flush() }, wantErrno: syscall.EIO, wantMsg: "status 1 without an errno"},
		{name: "pread missing", overrides: `pread) if [ "$off" = 0 ]; then echo 2; continue; fi; echo 0; dd if="$disk" iflag=skip_bytes,count_bytes skip="$off" count="$count" status=none ;;`,
			op:        func(s *Source) error { _, err := s.ReadAt(make([]byte, 512), 0); return err },
			wantErrno: syscall.EIO, wantMsg: "not provided"},
		{name: "zero missing writes zeros", overrides: `zero) echo 2 ;;`,
			op:    func(s *Source) error { return s.Zero(10, 100000, false) },
			check: zeroed(10, 100000)},
		{name: "zero ENOTSUP writes zeros", overrides: `zero) echo "1 ENOTSUP" ;;`,
			op:    func(s *Source) error { return s.Zero(1, 2, true) },
			check: zeroed(1, 2)},
		{name: "trim missing", overrides: `trim) echo 2 ;;`,
			op: func(s *Source) error { return s.Trim(0, 512) }},
		{name: "CRLF status line", overrides: `flush) printf '0\r\n' ;;`,
			op: func(s *Source) error { return s.Flush() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			diskPath, data := disk(t, dir, 1<<20)
			pids := filepath.Join(dir, "pids")
			path := writeScript(t, dir, "p.sh", persistentScript(diskPath, pids, filepath.Join(dir, "log"), "", tt.overrides))
			var lg logger
			s := open(t, path, Options{Persistent: true, Logf: lg.logf})
			err := tt.op(s)
			switch {
			case tt.wantErrno == 0 && err != nil:
				t.Fatalf("op = %v, want nil", err)
			case tt.wantErrno != 0 && !errors.Is(err, tt.wantErrno):
				t.Fatalf("op = %v, want an error wrapping %v", err, tt.wantErrno)
			case tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg):
				t.Errorf("op = %q, want it to contain %q", err, tt.wantMsg)
			}
			if tt.check != nil {
				tt.check(t, diskPath, data)
			}
			if _, err := s.ReadAt(make([]byte, 512), 512); err != nil {
				t.Errorf("ReadAt after the op = %v", err)
			}
			if n := len(pidsIn(t, pids)); n != 1 {
				t.Errorf("the program started %d times, want once (log: %s)", n, &lg)
			}
		})
	}
}

// TestPersistentBroken checks programs that break the protocol: the
// request fails with EIO in bounded time, the program's process group is
// killed, and the next request starts it again and works.
func TestPersistentBroken(t *testing.T) {
	const timeout = 700 * time.Millisecond
	tests := []struct {
		name      string
		method    string // flush (default) or pread
		broken    string // what the method does the first time; $pids2 is a file for pids to check
		wantMsg   string
		wantAbove time.Duration
	}{
		{name: "hang", broken: `sleep 30 & echo $! >> "$pids2"; wait`, wantMsg: "timed out after 700ms waiting for the reply", wantAbove: timeout},
		{name: "not a status line", broken: `echo hello`, wantMsg: `bad status line "hello"`},
		{name: "empty status line", broken: `echo`, wantMsg: `bad status line ""`},
		{name: "endless status line", broken: `yes | tr -d '\n'`, wantMsg: "status line longer than 4096 bytes"},
		{name: "exits", broken: `echo oops >&2; exit 3`, wantMsg: "stdout closed before replying; exit status 3"},
		{name: "crash", broken: `kill -SEGV $$`, wantMsg: "killed by signal 11"},
		{name: "output after the reply", broken: `printf '0\n0\n'`, wantMsg: "2 bytes of output after the reply"},
		{name: "stdout closed", broken: `exec >&-`, wantMsg: "stdout closed"},
		{name: "short data", method: "pread", broken: `echo 0; head -c 100 /dev/zero; exit 0`, wantMsg: "sent 100 of 4096 bytes of data"},
		{name: "data hangs", method: "pread", broken: `echo 0; head -c 100 /dev/zero; sleep 30`, wantMsg: "timed out after 700ms with 100 of 4096 bytes", wantAbove: timeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			diskPath, data := disk(t, dir, 1<<20)
			pids, pids2 := filepath.Join(dir, "pids"), filepath.Join(dir, "pids2")
			method := tt.method
			if method == "" {
				method = "flush"
			}
			// Broken once: the next program started works.
			pre := fmt.Sprintf("pids2=%q; if [ \"$cmd\" = %s ] && [ ! -e \"$pids2.once\" ]; then : > \"$pids2.once\"; %s; continue; fi", pids2, method, tt.broken)
			path := writeScript(t, dir, "p.sh", persistentScript(diskPath, pids, filepath.Join(dir, "log"), pre, ""))
			var lg logger
			s := open(t, path, Options{Persistent: true, Timeout: timeout, Logf: lg.logf})
			start := time.Now()
			var err error
			if method == "flush" {
				err = s.Flush()
			} else {
				_, err = s.ReadAt(make([]byte, 4096), 0)
			}
			took := time.Since(start)
			if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("%s = %v, want EIO with %q", method, err, tt.wantMsg)
			}
			if took < tt.wantAbove || took > timeout+2*time.Second {
				t.Errorf("%s took %v, want %v to %v", method, took, tt.wantAbove, timeout+2*time.Second)
			}
			requireGone(t, pids)
			if _, err := os.Stat(pids2); err == nil {
				requireGone(t, pids2)
			}
			p := make([]byte, 4096)
			if _, err := s.ReadAt(p, 4096); err != nil || !bytes.Equal(p, data[4096:8192]) {
				t.Fatalf("ReadAt after the failure = %v (data equal: %v)", err, bytes.Equal(p, data[4096:8192]))
			}
			if n := len(pidsIn(t, pids)); n != 2 {
				t.Errorf("the program started %d times, want twice", n)
			}
			if !strings.Contains(lg.String(), "started again") {
				t.Errorf("log = %q, want a note about the restart", lg.String())
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			requireGone(t, pids)
		})
	}
}

// TestPersistentCloseKills: a program that ignores end of file on stdin is
// killed, its process group too, within the timeout of Close.
func TestPersistentCloseKills(t *testing.T) {
	dir := t.TempDir()
	diskPath, _ := disk(t, dir, 1<<20)
	pids := filepath.Join(dir, "pids")
	body := persistentScript(diskPath, pids, filepath.Join(dir, "log"), "", "") + fmt.Sprintf("sleep 60 & echo $! >> %q; wait\n", pids)
	path := writeScript(t, dir, "p.sh", body)
	s, err := Open(path, Options{Persistent: true, Timeout: 500 * time.Millisecond, Logf: (&logger{}).logf})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v, want about the 500ms timeout", took)
	}
	requireGone(t, pids)
}

// TestPersistentStderr: the program's stderr reaches Logf a line at a time.
func TestPersistentStderr(t *testing.T) {
	dir := t.TempDir()
	diskPath, _ := disk(t, dir, 1<<20)
	path := writeScript(t, dir, "p.sh", persistentScript(diskPath, filepath.Join(dir, "pids"), filepath.Join(dir, "log"), "",
		`flush) echo "flushing now" >&2; printf 'bad\001byte\n' >&2; echo 0 ;;`))
	var lg logger
	s := open(t, path, Options{Persistent: true, Logf: lg.logf})
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, want := range []string{path + ": flushing now", path + ": bad?byte"} {
		if !strings.Contains(lg.String(), want) {
			t.Errorf("log = %q, want a line %q", lg.String(), want)
		}
	}
}

// TestPersistentInheritsNoDescriptors: a descriptor the process inherited
// without close-on-exec (as the server inherits attach's report pipe) does
// not stay open in the program, or the pipe's reader would wait forever
// for end of file.
func TestPersistentInheritsNoDescriptors(t *testing.T) {
	dir := t.TempDir()
	diskPath, _ := disk(t, dir, 1<<20)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETFD, 0); err != nil {
		t.Fatal(err)
	}
	path := writeScript(t, dir, "p.sh", persistentScript(diskPath, filepath.Join(dir, "pids"), "/dev/null", "", ""))
	s := open(t, path, Options{Persistent: true, Logf: (&logger{}).logf})
	if _, err := s.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("reading a pipe whose only writer we closed = %d, %v, want EOF: the program holds the write end", n, err)
	}
}
