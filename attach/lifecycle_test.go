package attach

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/kernel"
)

// fakeHost is a machine for the lifecycle tests: a fake sysfs tree, a
// state directory, and a driver whose DISCONNECT ends the device's server
// (a child process standing in for it) and unbinds the device, as the real
// one does; mounts and exclusive opens are set per test.
type fakeHost struct {
	t       *testing.T
	root    string
	host    host
	mu      sync.Mutex
	servers map[int]*exec.Cmd
	done    map[int]chan struct{}
	mounts  map[string][]string // "/dev/nbd0p1" -> mount points
	busy    map[string]bool
	disconn []int
}

func newFakeHost(t *testing.T) *fakeHost {
	f := &fakeHost{t: t, root: t.TempDir(), servers: map[int]*exec.Cmd{}, done: map[int]chan struct{}{},
		mounts: map[string][]string{}, busy: map[string]bool{}}
	for i := 0; i < 4; i++ {
		f.write(fmt.Sprintf("block/nbd%d/size", i), "0\n")
		f.write(fmt.Sprintf("class/block/nbd%d/dev", i), fmt.Sprintf("43:%d\n", i*32))
	}
	f.host = host{
		sys:      kernel.Sysfs{Root: f.root},
		stateDir: filepath.Join(t.TempDir(), "state"),
		disconnect: func(index int) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.disconn = append(f.disconn, index)
			if cmd := f.servers[index]; cmd != nil {
				cmd.Process.Signal(syscall.SIGTERM)
			}
			os.Remove(filepath.Join(f.root, fmt.Sprintf("block/nbd%d/pid", index)))
			return nil
		},
		mountsOf: func(major, minor uint32, dev string) []string {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.mounts[dev]
		},
		busy:   func(dev string) bool { f.mu.Lock(); defer f.mu.Unlock(); return f.busy[dev] },
		rescan: func(int) {},
	}
	return f
}

func (f *fakeHost) write(name, content string) {
	p := filepath.Join(f.root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// child starts a process standing in for a server or supervisor.
func (f *fakeHost) child() (*exec.Cmd, chan struct{}) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	f.t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, done
}

// attached binds device index: pid and backend in sysfs, and, for ours, a
// state record. server/supervisor: run a process for it, or record a
// dead pid.
func (f *fakeHost) attached(index int, backend string, ours, server, supervisor bool) *State {
	pid := 999999 // no such process
	if server {
		cmd, done := f.child()
		pid = cmd.Process.Pid
		f.mu.Lock()
		f.servers[index], f.done[index] = cmd, done
		f.mu.Unlock()
	}
	f.write(fmt.Sprintf("block/nbd%d/pid", index), fmt.Sprintf("%d\n", pid))
	f.write(fmt.Sprintf("block/nbd%d/backend", index), backend+"\n")
	f.write(fmt.Sprintf("block/nbd%d/size", index), "2048\n")
	f.write(fmt.Sprintf("block/nbd%d/ro", index), "0\n")
	if !ours {
		return nil
	}
	files := []FileIdentity{{Path: "/srv/disk.img", Dev: 8, Ino: uint64(100 + index)}}
	st := &State{Config: Config{Index: index, Source: "/srv/disk.img", BlockSize: 512, Files: files}, PID: pid, PIDStart: refOf(pid).Start,
		BackendID: backend, Desc: "/srv/disk.img", Format: "raw", Size: 1 << 20}
	if supervisor {
		cmd, _ := f.child()
		st.Supervisor, st.SupervisorStart = cmd.Process.Pid, refOf(cmd.Process.Pid).Start
	}
	if err := writeState(f.host.stateDir, st); err != nil {
		f.t.Fatal(err)
	}
	return st
}

func TestLifecycleList(t *testing.T) {
	f := newFakeHost(t)
	f.attached(0, "nbdloop:aaa", true, true, true)
	f.attached(1, "nbdloop:bbb", true, false, false)
	f.attached(2, "nbdloop:ccc", true, false, true)
	f.attached(3, "qemu-nbd", false, true, false)
	// A stale record for a device the kernel no longer has bound.
	writeState(f.host.stateDir, &State{Config: Config{Index: 5}, BackendID: "nbdloop:old"})
	devs, err := f.host.list(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name, state, source, reason string
	}{
		{"/dev/nbd0", StateRunning, "/srv/disk.img", ""},
		{"/dev/nbd1", StateDead, "/srv/disk.img", "the server died and no supervisor restarts it"},
		{"/dev/nbd2", StateRestarting, "/srv/disk.img", ""},
		{"/dev/nbd3", StateForeign, "qemu-nbd", ""},
	}
	if len(devs) != len(want) {
		t.Fatalf("list = %+v, want %d devices", devs, len(want))
	}
	for i, w := range want {
		d := devs[i]
		if d.Name != w.name || d.State != w.state || d.Source != w.source || !strings.Contains(d.Reason, w.reason) || d.Size != 1<<20 {
			t.Errorf("device %d = %+v, want %+v", i, d, w)
		}
		// The served files' identities, for list --associated; a foreign
		// device has none.
		if wantFiles := w.state != StateForeign; (len(d.Files) == 1 && d.Files[0].Ino == uint64(100+d.Index)) != wantFiles {
			t.Errorf("device %d files = %+v, want the record's: %v", i, d.Files, wantFiles)
		}
	}
	if devs, _ := f.host.list([]int{2}); len(devs) != 1 || devs[0].Index != 2 {
		t.Errorf("list([2]) = %+v", devs)
	}
}

func TestLifecycleDetach(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(f *fakeHost)
		index   int
		force   bool
		wantErr string
		check   func(t *testing.T, f *fakeHost)
	}{
		{name: "live device of ours", setup: func(f *fakeHost) { f.attached(0, "nbdloop:a", true, true, true) },
			check: func(t *testing.T, f *fakeHost) {
				// detach returns once the server is a zombie; its reaping
				// by the test's goroutine may come a moment later.
				select {
				case <-f.done[0]:
				case <-time.After(5 * time.Second):
					t.Error("the server still runs")
				}
				if readState(f.host.stateDir, 0) != nil {
					t.Error("the state record is left")
				}
			}},
		{name: "dead server", setup: func(f *fakeHost) { f.attached(0, "nbdloop:a", true, false, false) }},
		{name: "foreign device", setup: func(f *fakeHost) { f.attached(0, "qemu-nbd", false, true, false) }},
		{name: "not attached", setup: func(f *fakeHost) {}, wantErr: "/dev/nbd0: not attached"},
		{name: "no such device", setup: func(f *fakeHost) {}, index: 9, wantErr: "/dev/nbd9: no such nbd device"},
		{name: "mounted", setup: func(f *fakeHost) {
			f.attached(0, "nbdloop:a", true, true, true)
			f.write("block/nbd0/nbd0p1/holders/.keep", "")
			f.write("class/block/nbd0p1/dev", "43:1\n")
			f.mounts["/dev/nbd0p1"] = []string{"/mnt"}
		}, wantErr: "/dev/nbd0: device is mounted on /mnt (unmount it first: umount /mnt, or use --force)"},
		{name: "mounted, forced", setup: func(f *fakeHost) {
			f.attached(0, "nbdloop:a", true, true, false)
			f.mounts["/dev/nbd0"] = []string{"/mnt"}
		}, force: true},
		{name: "held by device-mapper", setup: func(f *fakeHost) {
			f.attached(0, "nbdloop:a", true, true, false)
			f.write("block/nbd0/holders/dm-0", "")
		}, wantErr: "/dev/nbd0: device is held by dm-0"},
		{name: "opened exclusively", setup: func(f *fakeHost) {
			f.attached(0, "nbdloop:a", true, true, false)
			f.busy["/dev/nbd0"] = true
		}, wantErr: "/dev/nbd0 is in use: opened exclusively"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHost(t)
			tt.setup(f)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := f.host.detach(ctx, tt.index, tt.force)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("detach = %v, want %q", err, tt.wantErr)
				}
				if len(f.disconn) != 0 {
					t.Errorf("refused, but disconnected %v", f.disconn)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(f.disconn) != 1 || f.disconn[0] != tt.index {
				t.Errorf("disconnected %v, want [%d]", f.disconn, tt.index)
			}
			if tt.check != nil {
				tt.check(t, f)
			}
		})
	}
}

// TestLifecycleRestart: what restart does for each state of a device: ask
// the live server to hand over (SIGUSR1), ask a live supervisor to try
// again (SIGHUP), refuse a device that is not ours or whose state died
// with its server.
func TestLifecycleRestart(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(f *fakeHost) *State
		wantErr string
		signal  string // "server" or "supervisor": which process must get its signal
	}{
		{name: "not attached", setup: func(f *fakeHost) *State { return nil }, wantErr: "/dev/nbd0: not attached (nothing to restart"},
		{name: "foreign", setup: func(f *fakeHost) *State { f.attached(0, "qemu-nbd", false, true, false); return nil },
			wantErr: "not attached by nbdloop"},
		{name: "qcow2", setup: func(f *fakeHost) *State {
			st := f.attached(0, "nbdloop:a", true, false, false)
			st.Format = "qcow2"
			writeState(f.host.stateDir, st)
			return st
		}, wantErr: "cannot restart: qcow2 keeps new cluster mappings"},
		{name: "live server and supervisor", setup: func(f *fakeHost) *State { return f.attached(0, "nbdloop:a", true, true, true) },
			signal: "server", wantErr: "no new server is serving the device"},
		{name: "live supervisor, dead server", setup: func(f *fakeHost) *State { return f.attached(0, "nbdloop:a", true, false, true) },
			signal: "supervisor", wantErr: "no new server is serving the device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHost(t)
			st := tt.setup(f)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := f.host.restart(ctx, 0, false)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("restart = %v, want %q", err, tt.wantErr)
			}
			if tt.signal == "" {
				return
			}
			// sleep dies of SIGUSR1 and SIGHUP alike: the one signalled is
			// gone, the other still runs.
			pid, other := st.PID, st.Supervisor
			if tt.signal == "supervisor" {
				pid, other = st.Supervisor, st.PID
			}
			time.Sleep(100 * time.Millisecond)
			if processAlive(pid) {
				t.Errorf("the %s (%d) was not signalled", tt.signal, pid)
			}
			if other != 999999 && !processAlive(other) {
				t.Errorf("the other process (%d) was signalled too", other)
			}
		})
	}
}
