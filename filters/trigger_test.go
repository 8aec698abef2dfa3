package filters

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// waitTrigger waits up to 5 s for tr to report want.
func waitTrigger(t *testing.T, tr *trigger, want bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for tr.active() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: trigger active = %v 5 s later, want %v", what, !want, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func watching(tr *trigger) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.watch != nil
}

// TestTriggerWatch: with polling slowed to an hour, only the inotify watch
// can make the trigger notice each change.
func TestTriggerWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "trigger")
	other := filepath.Join(dir, "elsewhere")
	tr := startTrigger(path, time.Hour, time.Hour)
	defer tr.close()
	if !watching(tr) {
		t.Fatal("not watching an existing directory")
	}
	steps := []struct {
		what string
		do   func() error
		want bool
	}{
		{"create", func() error { return os.WriteFile(path, nil, 0o644) }, true},
		{"remove", func() error { return os.Remove(path) }, false},
		{"rename in", func() error {
			if err := os.WriteFile(other, nil, 0o644); err != nil {
				return err
			}
			return os.Rename(other, path)
		}, true},
		{"rename out", func() error { return os.Rename(path, other) }, false},
		{"mkdir", func() error { return os.Mkdir(path, 0o755) }, true},
		{"rmdir", func() error { return os.Remove(path) }, false},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		waitTrigger(t, tr, s.want, s.what)
	}
}

// TestTriggerDirectoryReplaced: when the watched directory goes, the
// trigger polls often and watches the new directory once it exists.
func TestTriggerDirectoryReplaced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "trigger")
	tr := startTrigger(path, time.Hour, 5*time.Millisecond)
	defer tr.close()
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for watching(tr) {
		if time.Now().After(deadline) {
			t.Fatal("still watching 5 s after the directory was removed")
		}
		time.Sleep(time.Millisecond)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitTrigger(t, tr, true, "file in the new directory")
	for !watching(tr) {
		if time.Now().After(deadline) {
			t.Fatal("not watching the new directory 5 s later")
		}
		time.Sleep(time.Millisecond)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitTrigger(t, tr, false, "removed from the new directory (watched)")
}

// TestTriggerMissingDirectory: a trigger in a directory that does not exist
// yet is polled, and noticed once both exist.
func TestTriggerMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	path := filepath.Join(dir, "trigger")
	tr := startTrigger(path, time.Hour, 5*time.Millisecond)
	defer tr.close()
	if watching(tr) || tr.active() {
		t.Fatalf("watching %v, active %v; want neither", watching(tr), tr.active())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitTrigger(t, tr, true, "created with its directory")
}

// TestTriggerClose: close ends the goroutine whether it waits on the watch
// or on the poll timer, and may be called twice.
func TestTriggerClose(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
		tr := startTrigger(filepath.Join(dir, "trigger"), time.Hour, time.Hour)
		done := make(chan struct{})
		go func() { tr.close(); tr.close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("close of a trigger in %s did not return in 5 s", dir)
		}
		if watching(tr) {
			t.Errorf("trigger in %s still holds its inotify descriptor after close", dir)
		}
	}
}
