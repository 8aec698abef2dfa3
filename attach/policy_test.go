package attach

import (
	"strings"
	"testing"
	"time"
)

func TestDecideRestart(t *testing.T) {
	base := serverEnd{Index: 3, LastExit: "killed by signal 9 (killed)", Attached: true, Ran: time.Minute}
	with := func(f func(*serverEnd)) serverEnd { e := base; f(&e); return e }
	tests := []struct {
		name   string
		end    serverEnd
		action restartAction
		quick  int
		delay  time.Duration
		why    string
	}{
		{"long-lived server killed", base, restartServer, 1, 0, "/dev/nbd3: server killed by signal 9 (killed); restarting"},
		{"detached", with(func(e *serverEnd) { e.Detached = true }), stopSupervising, 0, 0, "after a detach"},
		{"detached exit of a failed start restarts", with(func(e *serverEnd) { e.Detached, e.Failed = true, true }), restartServer, 1, 0, "restarting"},
		{"stopping", with(func(e *serverEnd) { e.Stopping = true }), stopSupervising, 0, 0, "while stopping"},
		{"stopping wins over not restartable", with(func(e *serverEnd) { e.Stopping, e.NotRestartable = true, "x" }), stopSupervising, 0, 0, "while stopping"},
		{"no longer attached", with(func(e *serverEnd) { e.Attached = false }), stopSupervising, 0, 0, "no longer attached"},
		{"state died with it", with(func(e *serverEnd) {
			e.NotRestartable = "the cow filter's overlay lives in the server process and died with it"
		}), giveUp, 0, 0, "not restarted: the cow filter's overlay"},
		{"quick death", with(func(e *serverEnd) { e.Ran, e.Quick = time.Second, 2 }), restartServer, 3, restartDelay(3), "restarting"},
		{"failed start counts as quick", with(func(e *serverEnd) { e.Failed, e.Quick = true, 1 }), restartServer, 2, restartDelay(2), "restarting"},
		{"a long run resets the count", with(func(e *serverEnd) { e.Quick = 4 }), restartServer, 1, 0, "restarting"},
		{"last quick death allowed", with(func(e *serverEnd) { e.Ran, e.Quick = 0, maxQuickDeaths-1 }), restartServer, maxQuickDeaths, restartDelay(maxQuickDeaths), "restarting"},
		{"too many quick deaths", with(func(e *serverEnd) { e.Ran, e.Quick = 0, maxQuickDeaths }), giveUpRetry, maxQuickDeaths + 1, 0, "retry: nbdloop restart /dev/nbd3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decideRestart(tt.end)
			if d.Action != tt.action || d.Quick != tt.quick || d.Delay != tt.delay || !strings.Contains(d.Why, tt.why) {
				t.Errorf("decideRestart(%+v) = %+v, want action %v, quick %d, delay %v, why containing %q", tt.end, d, tt.action, tt.quick, tt.delay, tt.why)
			}
		})
	}
}

// TestNotRestartable: what dies with a server comes from the format's and
// the filters' table rows.
func TestNotRestartable(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		format string
		want   string
	}{
		{"raw file", Config{Source: "/srv/disk.img"}, "raw", ""},
		{"qcow2", Config{Source: "/srv/disk.qcow2"}, "qcow2", "qcow2 keeps new cluster mappings"},
		{"cow filter", Config{Source: "/srv/disk.img", Filters: []string{"delay:read=10ms", "cow"}}, "raw", "the cow filter's overlay"},
		{"other filters", Config{Source: "/srv/disk.img", Filters: []string{"delay:read=10ms", "stats"}}, "raw", ""},
		{"memory part", Config{Source: "/a.img", Composite: Composite{Layout: LayoutConcat, Sources: []string{"/a.img", "memory:1M"}}}, "concat", "memory: parts of a composite disk"},
	}
	for _, tt := range tests {
		if got := notRestartable(tt.cfg, tt.format); !strings.Contains(got, tt.want) || (tt.want == "") != (got == "") {
			t.Errorf("%s: notRestartable = %q, want %q", tt.name, got, tt.want)
		}
	}
}
