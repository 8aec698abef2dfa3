package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/attach"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// TestProgress renders a job's progress on a terminal (one line redrawn in
// place, at most every 200 ms and at the end) and elsewhere (a line at
// every 10%).
func TestProgress(t *testing.T) {
	type step struct {
		done int64
		at   time.Duration
	}
	const mib = 1 << 20
	tests := []struct {
		name  string
		tty   bool
		steps []step
		want  []string // what is written, in order; "\r\033[K" is shown as "|"
	}{
		{
			name:  "not a terminal",
			steps: []step{{5 * mib, time.Second}, {10 * mib, 2 * time.Second}, {35 * mib, 3 * time.Second}, {36 * mib, 3 * time.Second}, {100 * mib, 4 * time.Second}},
			want: []string{
				"nbdloop: indexing disk.gz: 10% (10M of 100M)\n",
				"nbdloop: indexing disk.gz: 30% (35M of 100M)\n",
				"nbdloop: indexing disk.gz: 100% (100M of 100M)\n",
			},
		},
		{
			name:  "terminal",
			tty:   true,
			steps: []step{{10 * mib, time.Second}, {11 * mib, time.Second + 100*time.Millisecond}, {50 * mib, 2 * time.Second}, {100 * mib, 2*time.Second + 10*time.Millisecond}},
			want: []string{
				"|indexing disk.gz: [===                           ]  10% 10M of 100M, 10M/s, 9s left",
				"|indexing disk.gz: [===============               ]  50% 50M of 100M, 25M/s, 2s left",
				"|indexing disk.gz: [==============================] 100% 100M of 100M, 49.8M/s",
				"|",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			clock := &fakeClock{t: time.Unix(1e9, 0)}
			start := clock.t
			p := newProgress(&out, "indexing disk.gz", 100*mib, tt.tty, clock.now)
			for _, s := range tt.steps {
				clock.t = start.Add(s.at)
				p.update(s.done, "")
			}
			p.done()
			got := strings.ReplaceAll(out.String(), "\r\033[K", "|")
			if want := strings.Join(tt.want, ""); got != want {
				t.Errorf("wrote\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestAttachProgress shows attach's Progress: a new progress for each job
// or total, nothing after done.
func TestAttachProgress(t *testing.T) {
	var out bytes.Buffer
	a := &attachProgress{w: &out, now: (&fakeClock{t: time.Unix(1e9, 0)}).now}
	for _, p := range []attach.Progress{
		{Job: attach.JobIndex, What: "/a.gz", Done: 50, Total: 100},
		{Job: attach.JobIndex, What: "/a.gz", Done: 100, Total: 100},
		{Job: attach.JobIndex, What: "/a.gz", Done: 300, Total: 400},
		{Job: attach.JobIndex, What: "/b.gz", Done: 10, Total: 10},
	} {
		a.report(p)
	}
	a.done()
	a.report(attach.Progress{Job: attach.JobIndex, What: "/c.gz", Done: 10, Total: 10})
	want := "nbdloop: indexing /a.gz: 50% (50B of 100B)\n" +
		"nbdloop: indexing /a.gz: 100% (100B of 100B)\n" +
		"nbdloop: indexing /a.gz: 70% (300B of 400B)\n" +
		"nbdloop: indexing /b.gz: 100% (10B of 10B)\n"
	if out.String() != want {
		t.Errorf("wrote\n%s\nwant\n%s", out.String(), want)
	}
}

// TestIsTerminal tells a terminal (a pseudo-terminal's end) from a pipe, a
// file and a buffer.
func TestIsTerminal(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	file, err := os.Create(t.TempDir() + "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for _, tt := range []struct {
		name string
		w    io.Writer
		want bool
	}{
		{"pseudo-terminal", pts, true},
		{"pipe", w, false},
		{"file", file, false},
		{"buffer", &bytes.Buffer{}, false},
	} {
		if got := isTerminal(tt.w); got != tt.want {
			t.Errorf("%s: isTerminal = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestListStateText: list's STATE shows a background decode while it runs.
func TestListStateText(t *testing.T) {
	for _, tt := range []struct {
		d    attach.Device
		want string
	}{
		{attach.Device{State: attach.StateRunning}, "running"},
		{attach.Device{State: attach.StateRunning, Decoded: &attach.Decoded{Done: 1, Total: 4}}, "running, decoding 25%"},
		{attach.Device{State: attach.StateRunning, Decoded: &attach.Decoded{Done: 4, Total: 4}}, "running"},
		{attach.Device{State: attach.StateDead, Decoded: &attach.Decoded{Done: 1, Total: 2}}, "dead"},
	} {
		if got := stateText(tt.d); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.d, got, tt.want)
		}
	}
}
