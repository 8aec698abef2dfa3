package attach

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/kernel"
)

// fakeDriver stands in for the NBD driver in serve's lifecycle tests.
// CONNECT keeps a duplicate of the kernel end of every socket (serve closes
// its own once the kernel has them) and binds the device in the fake sysfs;
// DISCONNECT sends NBD_CMD_DISC on every socket and closes it, as the
// kernel does.
type fakeDriver struct {
	f          *fakeHost
	index      int
	connectErr error

	mu          sync.Mutex
	socks       []*os.File
	req         kernel.ConnectRequest
	disconnects []int
	reconfigs   []kernel.ReconfigureRequest
}

func (d *fakeDriver) Connect(req kernel.ConnectRequest) (int, error) {
	if d.connectErr != nil {
		return 0, d.connectErr
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, fd := range req.Sockets {
		nfd, err := unix.Dup(fd)
		if err != nil {
			return 0, err
		}
		d.socks = append(d.socks, os.NewFile(uintptr(nfd), "kernel-end"))
	}
	d.req = req
	d.f.write(fmt.Sprintf("block/nbd%d/pid", d.index), fmt.Sprintf("%d\n", os.Getpid()))
	d.f.write(fmt.Sprintf("block/nbd%d/backend", d.index), req.BackendID+"\n")
	return d.index, nil
}

// Reconfigure records a RECONFIGURE; new sockets replace the old ones, as
// they replace dead ones in the kernel.
func (d *fakeDriver) Reconfigure(req kernel.ReconfigureRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(req.Sockets) > 0 {
		for _, s := range d.socks {
			s.Close()
		}
		d.socks = nil
		for _, fd := range req.Sockets {
			nfd, err := unix.Dup(fd)
			if err != nil {
				return err
			}
			d.socks = append(d.socks, os.NewFile(uintptr(nfd), "kernel-end"))
		}
	}
	d.reconfigs = append(d.reconfigs, req)
	return nil
}

func (d *fakeDriver) reconfigured() []kernel.ReconfigureRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]kernel.ReconfigureRequest(nil), d.reconfigs...)
}

func (d *fakeDriver) Disconnect(index int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.disconnects = append(d.disconnects, index)
	for _, s := range d.socks {
		nbdRequest(s, 2, 0, 0) // NBD_CMD_DISC
		s.Close()
	}
	d.socks = nil
	os.Remove(filepath.Join(d.f.root, fmt.Sprintf("block/nbd%d/pid", index)))
	return nil
}

func (d *fakeDriver) disconnected() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.disconnects...)
}

// nbdRequest writes a request header (no payload) for command typ.
func nbdRequest(w io.Writer, typ uint16, off uint64, length uint32) error {
	var b [28]byte
	binary.BigEndian.PutUint32(b[0:], 0x25609513)
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint64(b[8:], 0xc0ffee)
	binary.BigEndian.PutUint64(b[16:], off)
	binary.BigEndian.PutUint32(b[24:], length)
	_, err := w.Write(b[:])
	return err
}

// kernelRead reads length bytes at off through the kernel end s, as the
// driver would.
func kernelRead(t *testing.T, s *os.File, off uint64, length uint32) []byte {
	t.Helper()
	if err := nbdRequest(s, 0, off, length); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 16+int(length))
	if _, err := io.ReadFull(s, reply); err != nil {
		t.Fatal(err)
	}
	if m, e := binary.BigEndian.Uint32(reply), binary.BigEndian.Uint32(reply[4:]); m != 0x67446698 || e != 0 {
		t.Fatalf("reply magic %#x error %d", m, e)
	}
	return reply[16:]
}

// serveHost is the fake host with a fake driver, settling and no process
// protections (the test process must not mlockall itself).
func serveHost(t *testing.T) (*fakeHost, *fakeDriver) {
	f := newFakeHost(t)
	d := &fakeDriver{f: f, index: 2}
	f.host.openDriver = func() (driver, error) { return d, nil }
	f.host.settle = func(ctx context.Context, index int, partScan bool) ([]string, error) { return nil, nil }
	f.host.protect = func(bool) []string { return nil }
	return f, d
}

// testImage writes a 1 MiB file whose every 4 KiB block starts with its
// number, and returns its path and contents.
func testImage(t *testing.T) (string, []byte) {
	data := make([]byte, 1<<20)
	for i := 0; i < len(data); i += 4096 {
		binary.BigEndian.PutUint32(data[i:], uint32(i/4096)+1)
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// served runs serve in the background and returns the Result it reports
// and a channel with serve's error.
func served(t *testing.T, ctx context.Context, h host, cfg Config, report func(Result) error) (Result, <-chan error) {
	t.Helper()
	got := make(chan Result, 2)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, h, cfg, false, serveOptions{}, func(res Result) error {
			got <- res
			return report(res)
		})
	}()
	select {
	case res := <-got:
		return res, done
	case err := <-done:
		t.Fatalf("serve returned %v without reporting", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve reported nothing in 30 s")
	}
	return Result{}, nil
}

func waitServe(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return in 30 s")
	}
	return nil
}

func pinnedConfig(t *testing.T, source string) Config {
	cfg := NewConfig(source)
	cfg, err := cfg.pinned()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestLifecycleServe attaches a file through a fake driver, reads it
// through the kernel's end of a socket, and ends it both ways: a detach
// (the driver's DISCONNECT) and SIGTERM (serve disconnects itself).
func TestLifecycleServe(t *testing.T) {
	for _, end := range []string{"detach", "sigterm"} {
		t.Run(end, func(t *testing.T) {
			f, d := serveHost(t)
			path, data := testImage(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			res, done := served(t, ctx, f.host, pinnedConfig(t, path), func(Result) error { return nil })
			if res.Error != "" || res.State == nil {
				t.Fatalf("attach failed: %+v", res)
			}
			st := res.State
			if st.Config.Index != 2 || st.Size != 1<<20 || st.Format != "raw" || st.Desc != path || st.PID != os.Getpid() {
				t.Errorf("record: index %d size %d format %q desc %q pid %d", st.Config.Index, st.Size, st.Format, st.Desc, st.PID)
			}
			if d.req.Size != 1<<20 || d.req.BackendID != st.BackendID || len(d.req.Sockets) != st.Config.Connections {
				t.Errorf("CONNECT: size %d backend %q (record %q), %d sockets", d.req.Size, d.req.BackendID, st.BackendID, len(d.req.Sockets))
			}
			if rec := readState(f.host.stateDir, 2); rec == nil || rec.BackendID != st.BackendID {
				t.Fatalf("state record: %+v", rec)
			}
			if dev := st.device(); dev.Name != "/dev/nbd2" || dev.State != StateRunning {
				t.Errorf("device view: %+v", dev)
			}
			d.mu.Lock()
			sock := d.socks[len(d.socks)-1]
			d.mu.Unlock()
			if got := kernelRead(t, sock, 8192, 8192); !bytes.Equal(got, data[8192:16384]) {
				t.Errorf("read through the socket: bytes differ")
			}
			if end == "detach" {
				d.Disconnect(2)
			} else {
				cancel()
			}
			if err := waitServe(t, done); err != nil {
				t.Errorf("serve: %v", err)
			}
			if got := d.disconnected(); len(got) != 1 || got[0] != 2 {
				t.Errorf("DISCONNECTs %v, want one of device 2", got)
			}
			if rec := readState(f.host.stateDir, 2); rec != nil {
				t.Errorf("state record left behind: %+v", rec)
			}
		})
	}
}

// TestLifecycleServeFails runs each way an attach can fail: serve reports
// one error line, undoes a CONNECT it made (and only then), and leaves no
// state record.
func TestLifecycleServeFails(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, f *fakeHost, d *fakeDriver, cfg *Config)
		report    error
		want      string
		connected bool // DISCONNECT expected
	}{
		{name: "invalid request", want: "--connections", setup: func(t *testing.T, f *fakeHost, d *fakeDriver, cfg *Config) {
			cfg.Connections = 0
		}},
		{name: "bad spec", want: "memory:", setup: func(t *testing.T, f *fakeHost, d *fakeDriver, cfg *Config) {
			cfg.Source = "memory:lots"
		}},
		{name: "file gone", want: "no such file", setup: func(t *testing.T, f *fakeHost, d *fakeDriver, cfg *Config) {
			os.Remove(cfg.Source)
		}},
		{name: "no driver", want: "modprobe nbd", setup: func(t *testing.T, f *fakeHost, d *fakeDriver, cfg *Config) {
			f.host.openDriver = func() (driver, error) {
				return nil, errors.New("NBD driver not loaded (load the driver: modprobe nbd)")
			}
		}},
		{name: "device busy", want: "/dev/nbd2: device is in use", setup: func(t *testing.T, f *fakeHost, d *fakeDriver, cfg *Config) {
			cfg.Index, d.connectErr = 2, syscall.EBUSY
		}},
		{name: "device never usable", want: "/dev/nbd2: device node did not appear", connected: true, setup: func(t *testing.T, f *fakeHost, d *fakeDriver, cfg *Config) {
			f.host.settle = func(context.Context, int, bool) ([]string, error) {
				return nil, errors.New("device node did not appear")
			}
		}},
		{name: "attach gone", report: errors.New("broken pipe"), want: "broken pipe", connected: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, d := serveHost(t)
			path, data := testImage(t)
			cfg := pinnedConfig(t, path)
			if tt.setup != nil {
				tt.setup(t, f, d, &cfg)
			}
			reports := 0
			var res Result
			err := serve(context.Background(), f.host, cfg, false, serveOptions{}, func(r Result) error {
				reports++
				res = r
				return tt.report
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("serve: %v, want an error with %q", err, tt.want)
			}
			if tt.report == nil && (reports != 1 || !strings.Contains(res.Error, tt.want) || strings.Contains(res.Error, "\n")) {
				t.Errorf("%d reports, the last %+v; want one line with %q", reports, res, tt.want)
			}
			if got := d.disconnected(); (len(got) == 1) != tt.connected || len(got) > 1 {
				t.Errorf("DISCONNECTs %v; want one: %v", got, tt.connected)
			}
			if ents, _ := os.ReadDir(f.host.stateDir); len(ents) > 0 {
				for _, e := range ents {
					if strings.HasSuffix(e.Name(), ".json") {
						t.Errorf("state record left behind: %s", e.Name())
					}
				}
			}
			if b, err := os.ReadFile(path); err == nil && !bytes.Equal(b, data) {
				t.Errorf("the image changed")
			}
		})
	}
}
