//go:build kernel

package kerneltest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/kernel"
	"golang.org/x/sys/unix"
)

func indexOf(t *testing.T, dev string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(dev, "/dev/nbd"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestKernelNetlink exercises the parts of the netlink client that attach
// and detach do not: STATUS, RECONFIGURE (what a restarted server will use)
// and the LINK_DEAD multicast that announces a dead server.
func TestKernelNetlink(t *testing.T) {
	requireDriver(t)
	fam, err := kernel.Open()
	if err != nil {
		t.Fatal(err)
	}
	dev := attachDev(t, "memory:64M")
	index := indexOf(t, dev)
	sys := kernel.Sysfs{}

	st, err := fam.Status(index)
	if err != nil || len(st) != 1 || st[0].Index != index || !st[0].Connected {
		t.Errorf("Status(%d) = %+v, %v; want one connected device", index, st, err)
	}
	all, err := fam.Status(-1)
	if err != nil || len(all) < 16 {
		t.Errorf("Status(all) = %d devices, %v; want at least nbds_max=16", len(all), err)
	}

	backend, err := sys.Backend(index)
	if err != nil || !strings.HasPrefix(backend, "nbdloop:") {
		t.Fatalf("backend = %q, %v; want an nbdloop: identifier", backend, err)
	}
	// RECONFIGURE must name the device's backend.
	err = fam.Reconfigure(kernel.ReconfigureRequest{Index: index, Size: 32 << 20, BackendID: "nbdloop:someone-else"})
	if !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Reconfigure with a wrong backend id = %v, want EINVAL", err)
	}
	// A live resize through RECONFIGURE.
	if err := fam.Reconfigure(kernel.ReconfigureRequest{Index: index, Size: 32 << 20, BackendID: backend}); err != nil {
		t.Fatalf("Reconfigure(size 32M): %v", err)
	}
	if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(32<<20) {
		t.Errorf("size after RECONFIGURE = %s, want %d", got, 32<<20)
	}

	// LINK_DEAD arrives when the server dies.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dead := make(chan int, 4)
	watching := make(chan error, 1)
	go func() { watching <- fam.WatchLinkDead(ctx, func(i int) { dead <- i }) }()
	t.Logf("nbd's multicast group: %d", fam.LinkDeadGroup)
	if fam.LinkDeadGroup <= 32 {
		waitFor(t, 10*time.Second, "the watcher to join the nbd multicast group", func() error {
			select {
			case err := <-watching:
				t.Fatalf("WatchLinkDead ended before the kill: %v", err)
			default:
			}
			return joinedGroup(fam.LinkDeadGroup)
		})
	} else {
		// /proc/net/netlink shows only groups 1 to 32: nothing shows
		// that the watcher has joined a later one, so give it time.
		time.Sleep(200 * time.Millisecond)
	}
	if err := syscall.Kill(serverPID(t, dev), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case i := <-dead:
		if i != index {
			t.Errorf("LINK_DEAD for nbd%d, want nbd%d", i, index)
		}
	case err := <-watching:
		t.Fatalf("WatchLinkDead ended: %v", err)
	case <-ctx.Done():
		t.Fatal("no LINK_DEAD within 20s of killing the server")
	}
	cancel()
	if err := <-watching; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchLinkDead after cancel = %v, want context.Canceled", err)
	}
	detach(t, dev)

	// DISCONNECT of an unattached device is harmless.
	if err := fam.Disconnect(index); err != nil {
		t.Errorf("Disconnect of a free device: %v", err)
	}
	if _, ok, _ := sys.PID(index); ok {
		t.Error("pid file present on a free device")
	}
	if _, err := os.Stat("/run/nbdloop/nbd" + strconv.Itoa(index) + ".json"); err == nil {
		t.Error("state record left behind")
	}
	requireClean(t, "netlink")
}

// joinedGroup says whether a NETLINK_GENERIC socket of this process has
// joined multicast group g (1 to 32: the groups /proc/net/netlink shows).
func joinedGroup(g uint32) error {
	ours := map[string]bool{}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		l, _ := os.Readlink("/proc/self/fd/" + fd.Name())
		if ino, ok := strings.CutPrefix(l, "socket:["); ok {
			ours[strings.TrimSuffix(ino, "]")] = true
		}
	}
	b, err := os.ReadFile("/proc/net/netlink")
	if err != nil {
		return err
	}
	// Columns: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode.
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[1] != strconv.Itoa(unix.NETLINK_GENERIC) || !ours[f[len(f)-1]] {
			continue
		}
		if groups, err := strconv.ParseUint(f[3], 16, 32); err == nil && groups&(1<<(g-1)) != 0 {
			return nil
		}
	}
	return fmt.Errorf("no generic netlink socket of this process is in group %d (/proc/net/netlink)", g)
}
