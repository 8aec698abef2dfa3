package filters

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

func TestLogConformance(t *testing.T) {
	t.Parallel()
	want := testData(256<<10+512, 14)
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		l, err := NewLog(newMemoryWith(t, want), LogOptions{File: filepath.Join(t.TempDir(), "log")}, Env{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}, want)
}

// logLine is the documented format, decoded strictly.
type logLine struct {
	Time      string  `json:"time"`
	Conn      int     `json:"conn"`
	Op        string  `json:"op"`
	Offset    uint64  `json:"offset"`
	Length    uint32  `json:"length"`
	Flags     string  `json:"flags"`
	LatencyUS float64 `json:"latency_us"`
	Error     string  `json:"error"`
}

func readLog(t *testing.T, path string) ([]logLine, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []logLine
	var raw []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l logLine
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
		raw = append(raw, sc.Text())
	}
	return lines, raw
}

func TestLogLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.jsonl")
	l, err := NewLog(newMemoryWith(t, make([]byte, 1<<20)), LogOptions{File: path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 26, 14, 39, 59, 123456789, time.FixedZone("CET", 3600))
	reqs := []request.Request{
		{Conn: 0, Op: request.OpWrite, Flags: request.FlagFUA, Offset: 1024, Length: 4096, Start: start, Latency: 37500 * time.Nanosecond},
		{Conn: 3, Op: request.OpRead, Offset: 1 << 40, Length: 131072, Start: start.Add(time.Second), Latency: 2 * time.Millisecond, Error: 5},
		{Conn: 1, Op: request.OpFlush, Start: start, Latency: 1},
		{Conn: 1, Op: request.OpZero, Flags: request.FlagFUA | request.FlagNoHole, Offset: 512, Length: 512, Start: start, Error: 28},
		{Conn: 2, Op: request.OpTrim, Flags: request.FlagNoHole, Length: 1 << 30, Start: start, Error: 200},
		// A command no Source serves, with a flag that has no name.
		{Conn: 0, Op: request.OpCache, Flags: request.FlagFUA | 1<<3, Length: 4096, Start: start, Error: 22},
	}
	for _, r := range reqs {
		l.Observe(r)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, raw := readLog(t, path)
	want := []logLine{
		{Time: "2026-11-26T13:39:59.123456789Z", Conn: 0, Op: "write", Offset: 1024, Length: 4096, Flags: "fua", LatencyUS: 37.5},
		{Time: "2026-11-26T13:40:00.123456789Z", Conn: 3, Op: "read", Offset: 1 << 40, Length: 131072, LatencyUS: 2000, Error: "EIO"},
		{Time: "2026-11-26T13:39:59.123456789Z", Conn: 1, Op: "flush", LatencyUS: 0.001},
		{Time: "2026-11-26T13:39:59.123456789Z", Conn: 1, Op: "zero", Offset: 512, Length: 512, Flags: "fua,nohole", Error: "ENOSPC"},
		{Time: "2026-11-26T13:39:59.123456789Z", Conn: 2, Op: "trim", Length: 1 << 30, Flags: "nohole", Error: "E200"},
		{Time: "2026-11-26T13:39:59.123456789Z", Conn: 0, Op: "cmd5", Length: 4096, Flags: "fua", Error: "EINVAL"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("log =\n%+v\nwant\n%+v", got, want)
	}
	// The field order is part of the format.
	if w := `{"time":"2026-11-26T13:39:59.123456789Z","conn":0,"op":"write","offset":1024,"length":4096,"flags":"fua","latency_us":37.5,"error":""}`; raw[0] != w {
		t.Errorf("first line = %s\nwant         %s", raw[0], w)
	}
}

func TestLogObserveAllocatesNothing(t *testing.T) {
	l, err := NewLog(newMemoryWith(t, make([]byte, 4096)), LogOptions{File: filepath.Join(t.TempDir(), "log")}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := request.Request{Op: request.OpWrite, Flags: request.FlagFUA, Offset: 1 << 30, Length: 4096, Start: time.Now(), Latency: time.Millisecond, Error: 5}
	other := request.Request{Op: request.Op(9), Flags: request.FlagNoHole | 1<<5, Start: time.Now(), Error: 1000}
	if n := testing.AllocsPerRun(1000, func() { l.Observe(r); l.Observe(other) }); n != 0 {
		t.Errorf("Observe allocates %v times per call, want 0", n)
	}
}

// TestLogFlushesPeriodically: lines reach the file within about a second,
// without Close.
func TestLogFlushesPeriodically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := NewLog(newMemoryWith(t, make([]byte, 4096)), LogOptions{File: path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Observe(request.Request{Op: request.OpRead, Length: 512, Start: time.Now()})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, _ := os.ReadFile(path); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the line was not written within 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLogAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	for i, spec := range []string{"log:file=" + path, "log:append=true,file=" + path, "log:file=" + path + ",append=true"} {
		l := openSpec(t, newMemoryWith(t, make([]byte, 4096)), spec, Env{})
		l.(*Log).Observe(request.Request{Op: request.OpRead, Length: 512, Start: time.Now()})
		l.Close()
		if got, _ := readLog(t, path); len(got) != i+1 {
			t.Errorf("after %q: %d lines, want %d", spec, len(got), i+1)
		}
	}
}

// TestLogFileSafety: the log file is appended to and never truncated, is
// created 0600 only once a line is written (a failed attach leaves
// nothing), and a symbolic link or a non-regular file is refused.
func TestLogFileSafety(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.jsonl")
	old := []byte("{\"an\":\"old line\"}\n")
	if err := os.WriteFile(existing, old, 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.jsonl")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		lines   int    // lines observed before Close
		wantErr string // from NewLog
		check   func(t *testing.T)
	}{
		{name: "existing, no line (a failed attach)", path: existing, check: func(t *testing.T) {
			if b, _ := os.ReadFile(existing); !bytes.Equal(b, old) {
				t.Errorf("the file changed: %q", b)
			}
		}},
		{name: "existing, appended", path: existing, lines: 2, check: func(t *testing.T) {
			b, _ := os.ReadFile(existing)
			if !bytes.HasPrefix(b, old) || bytes.Count(b, []byte("\n")) != 3 {
				t.Errorf("want the old line and 2 new ones, got %q", b)
			}
		}},
		{name: "new, no line", path: filepath.Join(dir, "new1.jsonl"), check: func(t *testing.T) {
			if _, err := os.Lstat(filepath.Join(dir, "new1.jsonl")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a log file was created without a line: %v", err)
			}
		}},
		{name: "new, created 0600", path: filepath.Join(dir, "new2.jsonl"), lines: 1, check: func(t *testing.T) {
			fi, err := os.Stat(filepath.Join(dir, "new2.jsonl"))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("stat: %v, mode %v, want 0600", err, fi.Mode())
			}
		}},
		{name: "symbolic link", path: link, wantErr: "is a symbolic link: refused"},
		{name: "fifo", path: fifo, wantErr: "not a regular file"},
		{name: "directory missing", path: filepath.Join(dir, "nodir", "x.jsonl"), wantErr: "cannot create it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := NewLog(newMemoryWith(t, make([]byte, 4096)), LogOptions{File: tt.path}, Env{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewLog = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for range tt.lines {
				l.Observe(request.Request{Op: request.OpWrite, Length: 512, Start: time.Now()})
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			tt.check(t)
		})
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Errorf("the symlink's target changed: %q", b)
	}
}
