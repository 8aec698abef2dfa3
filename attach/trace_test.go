package attach

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// traceLines collects a trace's lines.
type traceLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *traceLines) trace(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *traceLines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// TestServeTrace: a traced server says each step it takes, in order:
// the request, the probe, the driver, CONNECT, settling, the record.
func TestServeTrace(t *testing.T) {
	f, d := serveHost(t)
	path, _ := testImage(t)
	cfg := pinnedConfig(t, path)
	cfg.Connections = 2
	var tl traceLines
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reported := make(chan Result, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, f.host, cfg, false, serveOptions{trace: tl.trace}, func(r Result) error { reported <- r; return nil })
	}()
	if res := <-reported; res.Error != "" {
		t.Fatalf("attach failed: %s", res.Error)
	}
	d.Disconnect(2)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []string{
		"checking the request and the pinned files",
		"opening the nbd driver (generic netlink family nbd)",
		"opening " + path + " and probing its format",
		"opened " + path + ": raw, 1048576 bytes, read-write",
		"serving 2 connections (socket pairs)",
		"NBD_CMD_CONNECT: the first free device, 1048576 bytes, 512-byte blocks, 2 sockets, flags ",
		"connected /dev/nbd2",
		"settling: waiting until /dev/nbd2 can be opened",
		"settled: /dev/nbd2 is usable",
		"wrote the state record " + filepath.Join(f.host.stateDir, "nbd2.json"),
	}
	got := tl.get()
	if len(got) != len(want) {
		t.Fatalf("trace:\n%s\nwant %d lines:\n%s", strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("trace line %d = %q, want %q", i+1, got[i], want[i])
		}
	}
}

// TestTracePinned: the pinning step names each file by path, device and
// inode, and says when there is none.
func TestTracePinned(t *testing.T) {
	path, _ := testImage(t)
	tests := []struct {
		source string
		want   string
	}{
		{path, "pinning: file " + path + " (device "},
		{"memory:1M", "pinning: no files to pin (memory:1M)"},
		{"exec:" + path, "pinning: program " + path + " (device "},
	}
	for _, tt := range tests {
		var tl traceLines
		tracePinned(tl.trace, pinnedConfig(t, tt.source))
		if got := tl.get(); len(got) != 1 || !strings.HasPrefix(got[0], tt.want) {
			t.Errorf("tracePinned(%s) = %q, want one line starting %q", tt.source, got, tt.want)
		}
	}
	var none Tracef
	tracePinned(none, pinnedConfig(t, path)) // no trace: nothing, no panic
	if traceOf(context.Background()) != nil {
		t.Error("traceOf(a context without trace) is not nil")
	}
	var tl traceLines
	traceOf(WithTrace(context.Background(), tl.trace)).tracef("x %d", 1)
	if got := tl.get(); len(got) != 1 || got[0] != "x 1" {
		t.Errorf("the trace WithTrace put in the context got %q", got)
	}
}
