//go:build kernel

package ublk

import (
	"bytes"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// TestKernelUblkDevice adds a device over a memory source (served through
// the tags' buffers) and over a memfd (a memory: disk: user copy, where
// the driver has it, as on 6.12), writes and reads it through
// /dev/ublkbN, checks the bytes reached the source, and stops it. It
// needs root and ublk_drv (run it in the VM on 6.12).
func TestKernelUblkDevice(t *testing.T) {
	ctrl, err := OpenControl()
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	userCopy := ctrl.features()&flagUserCopy != 0
	t.Logf("the driver offers user copy: %v", userCopy)
	for _, c := range []struct {
		name     string
		src      func(t *testing.T) sources.Source
		userCopy bool
	}{
		{"memory", func(t *testing.T) sources.Source { return newMemory(t, 64<<20) }, false},
		{"memfd", func(t *testing.T) sources.Source { return newRAMFile(t, 64<<20, 0) }, userCopy},
	} {
		t.Run(c.name, func(t *testing.T) { deviceReadWrite(t, ctrl, c.src(t), c.userCopy) })
	}
}

// deviceReadWrite is TestKernelUblkDevice on one source; userCopy says
// whether the device must be served with user copy.
func deviceReadWrite(t *testing.T, ctrl *Control, m sources.Source, userCopy bool) {
	d, err := Add(ctrl, m, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if (d.ram != nil) != userCopy {
		t.Errorf("served with user copy: %v, want %v", d.ram != nil, userCopy)
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

// BenchmarkKernelUblk4K reads and writes 4 KiB with O_DIRECT through
// /dev/ublkbN served by this process, so that the allocations it reports
// (the whole process's: testing counts every goroutine's) include the
// queues' loops: 0 allocs/op at steady state. "memory" is served on the
// queues' threads, "memfd" too, with user copy where the driver has it,
// "file" (a file in $SCRATCH, not in RAM) by their workers.
func BenchmarkKernelUblk4K(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		m, err := sources.NewMemory(64 << 20)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		benchmarkDevice(b, m)
	})
	b.Run("memfd", func(b *testing.B) { benchmarkDevice(b, newRAMFile(b, 64<<20, 0)) })
	b.Run("file", func(b *testing.B) {
		dir := os.Getenv("SCRATCH")
		if dir == "" {
			dir = b.TempDir()
		}
		path := dir + "/ublk-bench.img"
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			b.Fatal(err)
		}
		defer os.Remove(path)
		if err := os.Truncate(path, 64<<20); err != nil {
			b.Fatal(err)
		}
		f, err := sources.OpenFile(path, sources.FileOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if f.Caps().InMemory {
			b.Fatalf("%s is in RAM: the workers would not be used", path)
		}
		benchmarkDevice(b, f)
	})
}

func benchmarkDevice(b *testing.B, src sources.Source) {
	ctrl, err := OpenControl()
	if err != nil {
		b.Fatal(err)
	}
	defer ctrl.Close()
	d, err := Add(ctrl, src, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Stop()
	fd, err := unix.Open(d.Name(), unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(buf)
	io := func(i int) {
		off := int64(i%16384) * 4096
		var err error
		if i&1 == 0 {
			_, err = unix.Pwrite(fd, buf, off)
		} else {
			_, err = unix.Pread(fd, buf, off)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 1000; i++ { // warm up: every tag's path taken
		io(i)
	}
	b.ReportAllocs()
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		io(i)
	}
}

// TestKernelUblkRecover abandons a device added with Recovery, as a dying
// server would leave it, checks that a read meanwhile is held, not failed,
// and takes the device over with Recover: the held read completes with the
// bytes written before, and the device serves on until stopped.
func TestKernelUblkRecover(t *testing.T) {
	ctrl, err := OpenControl()
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	m := newMemory(t, 64<<20)
	d, err := Add(ctrl, m, Options{Recovery: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(d.Name(), os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		d.Stop()
		t.Fatal(err)
	}
	defer f.Close()
	buf, _ := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	want := bytes.Repeat([]byte("recovered!......"), 1<<16)
	copy(buf, want)
	if _, err := f.WriteAt(buf, 5<<20); err != nil {
		d.Stop()
		t.Fatal(err)
	}
	d.Abandon()
	read := make(chan error, 1)
	go func() {
		clear(buf)
		_, err := f.ReadAt(buf, 5<<20)
		read <- err
	}()
	select {
	case err := <-read:
		t.Fatalf("a read while no server serves ended (%v); want it held", err)
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	d2, err := Recover(ctrl, d.ID, m, Options{Logf: t.Logf})
	if err != nil {
		ctrl.StopDev(d.ID)
		ctrl.DelDev(d.ID)
		t.Fatal(err)
	}
	defer d2.Stop()
	t.Logf("recovered in %v", time.Since(start))
	select {
	case err := <-read:
		if err != nil || !bytes.Equal(buf, want) {
			t.Fatalf("held read after recovery: %v, same bytes %v", err, bytes.Equal(buf, want))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the held read did not complete after recovery")
	}
	if _, err := f.WriteAt(buf, 9<<20); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	f.Close()
	if err := d2.Stop(); err != nil {
		t.Fatal(err)
	}
}
