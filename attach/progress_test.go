package attach

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/kernel"
)

// TestReceiveResult reads what a child writes on its report pipe: Progress
// messages first, each handed on, then the Result.
func TestReceiveResult(t *testing.T) {
	p1 := Progress{Job: JobIndex, What: "/x.gz", Done: 10, Total: 100}
	p2 := Progress{Job: JobIndex, What: "/x.gz", Done: 100, Total: 100}
	res := Result{Error: "it failed", Warnings: []string{"a warning"}}
	tests := []struct {
		name     string
		progress []Progress
		result   *Result
		tail     string // written after the rest
		want     Result
		err      error // nil: none; errAny: some error
	}{
		{name: "result only", result: &res, want: res},
		{name: "progress then result", progress: []Progress{p1, p2}, result: &res, want: res},
		{name: "nothing", err: io.ErrUnexpectedEOF},
		{name: "progress, no result", progress: []Progress{p1}, err: io.ErrUnexpectedEOF},
		{name: "garbage", tail: "{not json", err: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			for _, p := range tt.progress {
				if err := sendProgress(&buf, p); err != nil {
					t.Fatal(err)
				}
			}
			if tt.result != nil {
				b, _ := json.Marshal(tt.result)
				buf.Write(b)
			}
			buf.WriteString(tt.tail)
			var got []Progress
			r, err := receiveResult(&buf, func(p Progress) { got = append(got, p) })
			switch {
			case tt.err == errAny && err == nil, tt.err != errAny && !errors.Is(err, tt.err):
				t.Fatalf("receiveResult: %v, want %v", err, tt.err)
			}
			if !reflect.DeepEqual(r, tt.want) {
				t.Errorf("Result %+v, want %+v", r, tt.want)
			}
			if !reflect.DeepEqual(got, tt.progress) {
				t.Errorf("progress %+v, want %+v", got, tt.progress)
			}
		})
	}
}

var errAny = errors.New("any error")

// TestDecodeLog follows a background decode: a log line at each 10% step
// passed and at the end, with the rate; the record written at each whole
// percent once it exists, and not after stop.
func TestDecodeLog(t *testing.T) {
	const total = 1000
	type update struct {
		done int64
		at   time.Duration // since the start
	}
	tests := []struct {
		name      string
		updates   []update
		recordAt  int // updates before the record exists
		stopAt    int // updates before stop (0: never)
		wantLines []string
		wantRecs  []int64
	}{
		{
			name:     "steps and end",
			updates:  []update{{50, time.Second}, {100, 2 * time.Second}, {105, 2 * time.Second}, {350, 4 * time.Second}, {1000, 10 * time.Second}},
			recordAt: 0,
			wantLines: []string{
				"/dev/nbd1: decoded 10% (100B of 1000B) in 2s, 50B/s",
				"/dev/nbd1: decoded 30% (350B of 1000B) in 4s, 87B/s",
				"/dev/nbd1: decoded all 1000B in 10s (100B/s): reads no longer wait for the decoder",
			},
			wantRecs: []int64{50, 100, 350, 1000},
		},
		{
			name:     "before the record",
			updates:  []update{{200, time.Second}, {205, time.Second}, {300, 2 * time.Second}},
			recordAt: 2,
			wantLines: []string{
				"/x.xz: decoded 20% (200B of 1000B) in 1s, 200B/s",
				"/dev/nbd1: decoded 30% (300B of 1000B) in 2s, 150B/s",
			},
			wantRecs: []int64{300},
		},
		{
			name:      "stopped",
			updates:   []update{{100, time.Second}, {1000, 2 * time.Second}},
			stopAt:    1,
			wantLines: []string{"/dev/nbd1: decoded 10% (100B of 1000B) in 1s, 100B/s", "/dev/nbd1: decoded all 1000B in 2s (500B/s): reads no longer wait for the decoder"},
			wantRecs:  []int64{100},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Unix(1e9, 0)
			now := start
			var lines []string
			d := newDecodeLog("/x.xz", func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }, func() time.Time { return now })
			var recs []int64
			record := func() {
				d.recording("/dev/nbd1", func(dd Decoded) error {
					if dd.Total != total {
						t.Errorf("record total %d, want %d", dd.Total, total)
					}
					recs = append(recs, dd.Done)
					return nil
				})
			}
			for i, u := range tt.updates {
				if i == tt.recordAt {
					record()
				}
				if tt.stopAt > 0 && i == tt.stopAt {
					d.stop()
				}
				now = start.Add(u.at)
				d.update(u.done, total)
			}
			if !reflect.DeepEqual(lines, tt.wantLines) {
				t.Errorf("log lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(tt.wantLines, "\n"))
			}
			if !reflect.DeepEqual(recs, tt.wantRecs) {
				t.Errorf("records at %v, want %v", recs, tt.wantRecs)
			}
			if c := d.current(); c == nil || c.Done != tt.updates[len(tt.updates)-1].done {
				t.Errorf("current() = %+v", c)
			}
		})
	}
}

// TestDecodedString is how list shows a decode.
func TestDecodedString(t *testing.T) {
	for _, tt := range []struct {
		d    *Decoded
		want string
	}{
		{nil, ""},
		{&Decoded{0, 100}, "decoding 0%"},
		{&Decoded{425, 1000}, "decoding 42%"},
		{&Decoded{1000, 1000}, ""},
	} {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.d, got, tt.want)
		}
	}
}

// compressFile writes data compressed by tool (gzip, xz) into a file in a
// fresh directory and returns its path.
func compressFile(t *testing.T, tool, name string, data []byte, args ...string) string {
	t.Helper()
	tooltest.Require(t, tool)
	cmd := exec.Command(tool, append(args, "-c")...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestServeIndexProgress attaches a gzip file for the first time: the
// driver is checked before the inflating pass (a machine without it fails
// at once with the modprobe hint, having read nothing and saved no index),
// and with the driver the pass reports its progress to attach, up to its
// end, before the Result.
func TestServeIndexProgress(t *testing.T) {
	data := bytes.Repeat([]byte("nbdloop indexes gzip files once."), 1<<18) // 8 MiB
	gz := compressFile(t, "gzip", "disk.img.gz", data)
	tests := []struct {
		name   string
		driver error
		want   string // in the error; "": attaches
	}{
		{name: "no driver", driver: fmt.Errorf("%w (load the driver: modprobe nbd)", kernel.ErrNoDriver), want: "modprobe nbd"},
		{name: "driver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := t.TempDir()
			t.Setenv("XDG_CACHE_HOME", cache)
			f, _ := serveHost(t)
			if tt.driver != nil {
				f.host.openDriver = func() (driver, error) { return nil, tt.driver }
			}
			var mu sync.Mutex
			var got []Progress
			var reported bool
			so := serveOptions{progress: func(p Progress) {
				mu.Lock()
				defer mu.Unlock()
				if reported {
					t.Errorf("progress %+v after the Result", p)
				}
				got = append(got, p)
			}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			results := make(chan Result, 1)
			done := make(chan error, 1)
			go func() {
				done <- serve(ctx, f.host, pinnedConfig(t, gz), false, so, func(res Result) error {
					mu.Lock()
					reported = true
					mu.Unlock()
					results <- res
					return nil
				})
			}()
			res := <-results
			mu.Lock()
			defer mu.Unlock()
			if tt.want != "" {
				if !strings.Contains(res.Error, tt.want) {
					t.Errorf("Result error %q, want %q", res.Error, tt.want)
				}
				if len(got) > 0 {
					t.Errorf("%d progress reports before failing on the driver, want none", len(got))
				}
				if _, err := os.Stat(filepath.Join(cache, "nbdloop")); err == nil {
					t.Errorf("the index cache was created before the driver was checked")
				}
				waitServe(t, done)
				return
			}
			if res.Error != "" {
				t.Fatalf("attach failed: %s", res.Error)
			}
			fi, _ := os.Stat(gz)
			if len(got) < 2 {
				t.Fatalf("%d progress reports, want several", len(got))
			}
			last := got[len(got)-1]
			for _, p := range got {
				if p.Job != JobIndex || p.What != gz || p.Total != 2*fi.Size() {
					t.Errorf("progress %+v: want job %q on %s of %d bytes (inflating and hashing)", p, JobIndex, gz, 2*fi.Size())
				}
			}
			if last.Done != last.Total {
				t.Errorf("last progress %+v: want done == total", last)
			}
			cancel()
			waitServe(t, done)
		})
	}
}

// TestServeDecodeProgress attaches a single-block xz file, decoded in the
// background: the device's record, and so list and list --json, show
// how far the decode is, up to its end.
func TestServeDecodeProgress(t *testing.T) {
	data := make([]byte, 40<<20) // larger than xz's single-block threshold
	for i := 0; i < len(data); i += 1 << 20 {
		copy(data[i:], fmt.Sprintf("MiB %d", i>>20))
	}
	xzPath := compressFile(t, "xz", "disk.img.xz", data, "-T1", "-0")
	t.Setenv("TMPDIR", t.TempDir())
	f, _ := serveHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, done := served(t, ctx, f.host, pinnedConfig(t, xzPath), func(Result) error { return nil })
	if res.Error != "" {
		t.Fatalf("attach failed: %s", res.Error)
	}
	deadline := time.Now().Add(30 * time.Second)
	var dev Device
	for {
		devs, err := f.host.list(nil)
		if err != nil || len(devs) != 1 {
			t.Fatalf("list: %v, %d devices", err, len(devs))
		}
		dev = devs[0]
		if dev.Decoded != nil && dev.Decoded.Done == dev.Decoded.Total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list after 30 s: decoded %+v, want all %d bytes", dev.Decoded, len(data))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if dev.Decoded.Total != int64(len(data)) {
		t.Errorf("decoded %+v, want a total of %d", dev.Decoded, len(data))
	}
	b, _ := json.Marshal(dev)
	if want := fmt.Sprintf(`"decoded":{"done":%d,"total":%d}`, len(data), len(data)); !strings.Contains(string(b), want) {
		t.Errorf("list --json: %s\nwant %s", b, want)
	}
	cancel()
	if err := waitServe(t, done); err != nil {
		t.Errorf("serve: %v", err)
	}
	if rec := readState(f.host.stateDir, 2); rec != nil {
		t.Errorf("state record left behind (or written again after removal): %+v", rec.Decoded)
	}
}
