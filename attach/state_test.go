package attach

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testState(index, pid int) *State {
	cfg := NewConfig("/srv/disk.img")
	cfg.Index, cfg.BlockSize, cfg.ReadOnly, cfg.Connections = index, 4096, true, 4
	cfg.Timeout, cfg.DeadTimeout = 0, 30*time.Second
	return &State{
		Config:      cfg,
		PID:         pid,
		BackendID:   "nbdloop:1234:abcd",
		Desc:        "/srv/disk.img",
		Format:      "raw",
		Size:        1 << 30,
		ServerFlags: 0x1ff,
		Started:     time.Date(2025, 3, 1, 12, 30, 45, 123456789, time.UTC),
	}
}

func TestStateDir(t *testing.T) {
	t.Setenv("NBDLOOP_STATE_DIR", "")
	if got := StateDir(); got != DefaultStateDir {
		t.Errorf("StateDir() = %q with NBDLOOP_STATE_DIR empty, want %q", got, DefaultStateDir)
	}
	dir := t.TempDir()
	t.Setenv("NBDLOOP_STATE_DIR", dir)
	if got := StateDir(); got != dir {
		t.Errorf("StateDir() = %q, want %q", got, dir)
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "nbdloop") // created by writeState
	want := testState(3, 4242)
	if err := writeState(dir, want); err != nil {
		t.Fatalf("writeState error = %v", err)
	}
	got := readState(dir, 3)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readState(dir, 3) = %+v, want %+v", got, want)
	}
	// Only the record itself is left: the temporary file was renamed.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "nbd3.json" {
		t.Errorf("state directory holds %q, want [nbd3.json]", names)
	}
	// A second write replaces the record.
	want.PID = 4343
	if err := writeState(dir, want); err != nil {
		t.Fatalf("writeState (again) error = %v", err)
	}
	if got := readState(dir, 3); got == nil || got.PID != 4343 {
		t.Errorf("readState after a rewrite = %+v, want PID 4343", got)
	}
	if got := readState(dir, 4); got != nil {
		t.Errorf("readState(dir, 4) = %+v, want nil (no record)", got)
	}
}

func TestReadStateTolerates(t *testing.T) {
	tests := []struct {
		name    string
		content string // written to nbd3.json; "" means no file
	}{
		{name: "missing", content: ""},
		{name: "garbage", content: "\x00\x01not json at all"},
		{name: "truncated", content: `{"device": "/dev/nbd3", "index": 3, "pid": 12`},
		{name: "wrong type", content: `{"index": "three"}`},
		{name: "index mismatch", content: `{"device": "/dev/nbd4", "index": 4, "pid": 12}`},
		{name: "no index", content: `{"device": "/dev/nbd3", "pid": 12}`},
		{name: "array", content: `[1, 2, 3]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.content != "" {
				if err := os.WriteFile(filepath.Join(dir, "nbd3.json"), []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := readState(dir, 3); got != nil {
				t.Errorf("readState(dir, 3) = %+v, want nil", got)
			}
		})
	}
}

func TestRemoveState(t *testing.T) {
	tests := []struct {
		name       string
		record     *State // nil: no record
		garbage    bool   // write an unreadable record instead
		pid        int
		wantExists bool
	}{
		{name: "owner removes", record: testState(3, 100), pid: 100, wantExists: false},
		{name: "any pid with 0", record: testState(3, 100), pid: 0, wantExists: false},
		{name: "other pid keeps a newer record", record: testState(3, 100), pid: 200, wantExists: true},
		{name: "unreadable record is removed", garbage: true, pid: 200, wantExists: false},
		{name: "missing record", pid: 100, wantExists: false},
		{name: "missing record with pid 0", pid: 0, wantExists: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := statePath(dir, 3)
			switch {
			case tt.record != nil:
				if err := writeState(dir, tt.record); err != nil {
					t.Fatal(err)
				}
			case tt.garbage:
				if err := os.WriteFile(p, []byte("{"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := removeState(dir, 3, tt.pid); err != nil {
				t.Fatalf("removeState(dir, 3, %d) = %v, want nil", tt.pid, err)
			}
			_, err := os.Stat(p)
			if exists := err == nil; exists != tt.wantExists {
				t.Errorf("after removeState(dir, 3, %d): record exists = %v, want %v", tt.pid, exists, tt.wantExists)
			}
		})
	}
}

func TestRemoveStateOtherIndex(t *testing.T) {
	dir := t.TempDir()
	if err := writeState(dir, testState(3, 100)); err != nil {
		t.Fatal(err)
	}
	if err := removeState(dir, 4, 100); err != nil {
		t.Fatalf("removeState(dir, 4, 100) = %v, want nil", err)
	}
	if _, err := os.Stat(statePath(dir, 3)); errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removeState(dir, 4, 100) removed the record of nbd3")
	}
}

func TestParseDevice(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr bool
	}{
		{name: "dev path", in: "/dev/nbd3", want: 3},
		{name: "name", in: "nbd3", want: 3},
		{name: "index", in: "3", want: 3},
		{name: "zero", in: "/dev/nbd0", want: 0},
		{name: "two digits", in: "/dev/nbd15", want: 15},
		{name: "large index", in: "nbd1023", want: 1023},
		{name: "other device", in: "/dev/sda", wantErr: true},
		{name: "loop device", in: "/dev/loop0", wantErr: true},
		{name: "no index", in: "/dev/nbd", wantErr: true},
		{name: "name without index", in: "nbd", wantErr: true},
		{name: "negative", in: "/dev/nbd-1", wantErr: true},
		{name: "negative index", in: "-1", wantErr: true},
		{name: "plus sign", in: "nbd+3", wantErr: true},
		{name: "leading zero", in: "/dev/nbd03", wantErr: true},
		{name: "leading zero index", in: "03", wantErr: true},
		{name: "partition", in: "nbd3p1", wantErr: true},
		{name: "dev partition", in: "/dev/nbd3p1", wantErr: true},
		{name: "dev without nbd", in: "/dev/3", wantErr: true},
		{name: "sysfs path", in: "/sys/block/nbd3", wantErr: true},
		{name: "relative dev", in: "dev/nbd3", wantErr: true},
		{name: "trailing space", in: "nbd3 ", wantErr: true},
		{name: "uppercase", in: "NBD3", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "overflow", in: "nbd99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDevice(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseDevice(%q) = %d, nil, want an error", tt.in, got)
				}
				want := tt.in + ": not an nbd device (use /dev/nbdN)"
				if err.Error() != want {
					t.Errorf("ParseDevice(%q) error = %q, want %q", tt.in, err, want)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseDevice(%q) = %d, %v, want %d, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestProcessAlive(t *testing.T) {
	if !processAlive(os.Getpid()) {
		t.Errorf("processAlive(os.Getpid()) = false, want true")
	}
	for _, pid := range []int{0, -1} {
		if processAlive(pid) {
			t.Errorf("processAlive(%d) = true, want false", pid)
		}
	}

	// A running child is alive.
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	if !processAlive(sleep.Process.Pid) {
		t.Errorf("processAlive(%d) = false for a running child, want true", sleep.Process.Pid)
	}
	sleep.Process.Kill()
	sleep.Wait()

	// A reaped child is gone.
	reaped := exec.Command("true")
	if err := reaped.Run(); err != nil {
		t.Fatal(err)
	}
	if processAlive(reaped.Process.Pid) {
		t.Errorf("processAlive(%d) = true for a reaped child, want false", reaped.Process.Pid)
	}
}

func TestProcessAliveZombie(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	// Until it is waited for, the exited child is a zombie.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			t.Fatalf("reading /proc/%d/stat: %v", pid, err)
		}
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && strings.HasPrefix(string(b[i:]), ") Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d did not become a zombie: %s", pid, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if processAlive(pid) {
		t.Errorf("processAlive(%d) = true for a zombie, want false", pid)
	}
}

// TestStateFilesPrivate: the state directory is 0700 (tightened if an older
// nbdloop left it 0755), records and logs are 0600, and a log that is a
// symbolic link is refused.
func TestStateFilesPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeState(dir, &State{Config: Config{Index: 3}}); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "nbd3.log")
	if err := os.WriteFile(old, []byte("old line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lf, err := openLog(dir, deviceLogPath(dir, 3))
	if err != nil {
		t.Fatal(err)
	}
	lf.Close()
	for _, c := range []struct {
		path string
		want os.FileMode
	}{{dir, 0o700}, {statePath(dir, 3), 0o600}, {old, 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != c.want {
			t.Errorf("%s: mode %v, want %v", c.path, got, c.want)
		}
	}
	if b, _ := os.ReadFile(old); string(b) != "old line\n" {
		t.Errorf("the log was not appended to: %q", b)
	}
	target := filepath.Join(t.TempDir(), "target")
	os.WriteFile(target, nil, 0o644)
	if err := os.Symlink(target, filepath.Join(dir, "nbd4.log")); err != nil {
		t.Fatal(err)
	}
	if lf, err := openLog(dir, deviceLogPath(dir, 4)); err == nil {
		lf.Close()
		t.Error("a log that is a symbolic link was opened")
	}
}
