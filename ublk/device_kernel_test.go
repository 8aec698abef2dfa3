//go:build kernel

package ublk

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// TestKernelUblkDevice adds a device over a memory source, writes and
// reads it through /dev/ublkbN, checks the bytes reached the source, and
// stops it. It needs root and ublk_drv (run it in the VM on 6.12).
func TestKernelUblkDevice(t *testing.T) {
	ctrl, err := OpenControl()
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	m := newMemory(t, 64<<20)
	d, err := Add(ctrl, m, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			d.Stop()
		}
	}()
	f, err := os.OpenFile(d.Name(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if _, err := f.WriteAt(want, 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := m.ReadAt(got, 3<<20); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the source holds other bytes than were written (%v)", err)
	}
	clear(got)
	if _, err := f.ReadAt(got, 3<<20); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back other bytes (%v)", err)
	}
	f.Close()
	start := time.Now()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	t.Logf("stopped in %v", time.Since(start))
	select {
	case <-d.Done():
	default:
		t.Fatal("queues still running after Stop")
	}
	if _, err := os.Stat(d.Name()); !os.IsNotExist(err) {
		t.Fatalf("%s still exists after Stop (%v)", d.Name(), err)
	}
}
