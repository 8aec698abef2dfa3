package attach

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// TestImageLocks: writers exclude writers and readers, readers share, and
// qemu sees nbdloop's locks and nbdloop qemu's (qemu-img, qemu-nbd).
func TestImageLocks(t *testing.T) {
	tooltest.Require(t, "qemu-img", "qemu-nbd")
	t.Setenv("NBDLOOP_STATE_DIR", t.TempDir())
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, b)
	}
	reader := func(t *testing.T) (*imageLock, error) {
		l, err := lockFile(img)
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		return l, err
	}
	writer := func(t *testing.T) (*imageLock, error) {
		l, err := reader(t)
		if err != nil {
			return nil, err
		}
		return l, l.upgrade()
	}
	t.Run("two readers", func(t *testing.T) {
		if _, err := reader(t); err != nil {
			t.Fatal(err)
		}
		if _, err := reader(t); err != nil {
			t.Fatalf("second reader: %v", err)
		}
	})
	t.Run("writer then writer", func(t *testing.T) {
		w, err := writer(t)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := writer(t); err == nil || !strings.Contains(err.Error(), "is being written by another program") {
			t.Fatalf("second writer: %v", err)
		}
		if _, err := reader(t); err == nil {
			t.Fatal("a reader got in beside a writer")
		}
		if out, err := exec.Command("qemu-img", "info", img).CombinedOutput(); err == nil || !strings.Contains(string(out), "lock") {
			t.Errorf("qemu-img info beside our writer: %v: %s", err, out)
		}
		w.Close()
		if _, err := writer(t); err != nil {
			t.Fatalf("writer after the first closed: %v", err)
		}
	})
	t.Run("reader then writer", func(t *testing.T) {
		if _, err := reader(t); err != nil {
			t.Fatal(err)
		}
		_, err := writer(t)
		if err == nil || !strings.Contains(err.Error(), "which does not let others write it") {
			t.Fatalf("writer beside a reader: %v", err)
		}
	})
	t.Run("holder named", func(t *testing.T) {
		id, _ := identify(img)
		if err := writeState(StateDir(), &State{PID: 1, Config: Config{Index: 3, Files: []FileIdentity{id}}}); err != nil {
			t.Fatal(err)
		}
		defer removeState(StateDir(), 3, 0)
		if _, err := writer(t); err != nil {
			t.Fatal(err)
		}
		if _, err := writer(t); err == nil || !strings.Contains(err.Error(), "is being written by /dev/nbd3: refused") {
			t.Fatalf("second writer: %v", err)
		}
	})
	t.Run("qemu-nbd writing", func(t *testing.T) {
		sock := filepath.Join(dir, "q.sock")
		cmd := exec.Command("qemu-nbd", "--socket="+sock, "-f", "qcow2", img)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		// qemu-nbd has opened (and locked) the image once it listens.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("qemu-nbd did not create its socket within a minute")
			}
		}
		if _, err := reader(t); err == nil || !strings.Contains(err.Error(), "is being written by another program (qemu") {
			t.Fatalf("beside qemu-nbd: %v", err)
		}
	})
}
