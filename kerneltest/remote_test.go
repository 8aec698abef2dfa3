//go:build kernel

package kerneltest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/nbdtest"
)

// TestKernelRemote: nbdloop attach nbd+unix:///?socket=S against nbdkit
// and against nbdloop serve, each serving an image file: mkfs, mount,
// write, read back; the remote server is killed and started again while a
// program appends and fsyncs records on the mounted file system: no write
// fails, every acknowledged record is there, a file written before reads
// back the same after dropping the caches, e2fsck finds the file system
// clean. Then the local server is killed: the new one connects to the
// remote export again.
func TestKernelRemote(t *testing.T) {
	requireDriver(t)
	servers := []struct {
		name  string
		start func(t *testing.T, img string) *nbdtest.Server
	}{
		{"nbdkit", func(t *testing.T, img string) *nbdtest.Server { return nbdtest.Nbdkit(t, "file", img) }},
		{"nbdloop serve", func(t *testing.T, img string) *nbdtest.Server {
			sock := nbdtest.SocketPath(t)
			return nbdtest.Command(t, sock, "", nbdloop(t), "serve", "--unix", sock, img)
		}},
	}
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			dir := scratch(t)
			img := filepath.Join(dir, "remote.img")
			must(t, "truncate", "-s", "256M", img)
			srv := s.start(t, img)
			dev := attachDev(t, srv.URI)
			if d := deviceEntry(t, dev); d.Source != srv.URI || d.Size != 256<<20 {
				t.Errorf("list shows %s as %q, %d bytes; want %q, %d", dev, d.Source, d.Size, srv.URI, 256<<20)
			}
			must(t, "mkfs.ext4", "-q", dev)
			mnt := filepath.Join(dir, "mnt")
			os.Mkdir(mnt, 0o755)
			must(t, "mount", dev, mnt)
			t.Cleanup(func() { run(t, "umount", mnt) })

			ref := filepath.Join(dir, "ref")
			must(t, "dd", "if=/dev/urandom", "of="+ref, "bs=1M", "count=16", "status=none")
			must(t, "cp", ref, filepath.Join(mnt, "copy"))
			must(t, "sync")

			records := filepath.Join(mnt, "records")
			acked, stop, werr := appendRecords(t, records)
			time.Sleep(500 * time.Millisecond)
			srv.Kill()
			killedAt := acked.Load()
			time.Sleep(1500 * time.Millisecond)
			srv.Start()
			time.Sleep(time.Second)
			stop()
			if err := <-werr; err != nil {
				t.Fatalf("the writer failed across the remote's restart: %v", err)
			}
			last := acked.Load()
			if last <= killedAt {
				t.Errorf("no record acknowledged after the remote's restart (%d before the kill, %d at the end)", killedAt, last)
			}
			t.Logf("%d records fsynced before the kill, %d in all", killedAt+1, last+1)

			if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
				t.Fatal(err)
			}
			if a, b := sha(t, ref, 0), sha(t, filepath.Join(mnt, "copy"), 0); a != b {
				t.Errorf("the copy reads back differently after the restart")
			}
			checkRecords(t, records, last)
			if d := deviceInfo(t, dev); d.State != "running" || d.Restarts != 0 {
				t.Errorf("after the remote's restart: %+v, want running, the local server never restarted", d)
			}

			killServer(t, dev, 256<<20)
			must(t, "sync")
			if a, b := sha(t, ref, 0), sha(t, filepath.Join(mnt, "copy"), 0); a != b {
				t.Errorf("the copy reads back differently after the local server's restart")
			}

			must(t, "umount", mnt)
			if r := run(t, "e2fsck", "-fn", dev); r.code != 0 {
				t.Errorf("e2fsck -fn: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			detach(t, dev)
			requireClean(t, "remote "+s.name)
		})
	}
}

// deviceEntry returns dev's source and size in `list --json`.
func deviceEntry(t *testing.T, dev string) (d struct {
	Source string
	Size   int64
}) {
	t.Helper()
	for _, e := range listDevices(t).Devices {
		if e.Name == dev {
			d.Source, d.Size = e.Source, e.Size
			return d
		}
	}
	t.Fatalf("%s is not in list --json", dev)
	return d
}

// appendRecords appends numbered lines to path, each followed by fsync,
// until stop is called; acked is the number of the last one fsynced, and
// werr gets the writer's error (nil when stopped).
func appendRecords(t *testing.T, path string) (acked *atomic.Int64, stop func(), werr chan error) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	acked = &atomic.Int64{}
	acked.Store(-1)
	ctx, cancel := context.WithCancel(context.Background())
	werr = make(chan error, 1)
	go func() {
		defer f.Close()
		for i := int64(0); ctx.Err() == nil; i++ {
			if _, err := fmt.Fprintf(f, "record %08d\n", i); err != nil {
				werr <- err
				return
			}
			if err := f.Sync(); err != nil {
				werr <- err
				return
			}
			acked.Store(i)
		}
		werr <- nil
	}()
	return acked, cancel, werr
}

// checkRecords checks that path holds records 0.. in order, at least up
// to last.
func checkRecords(t *testing.T, path string, last int64) {
	t.Helper()
	rf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	sc := bufio.NewScanner(rf)
	var n int64
	for sc.Scan() {
		if want := fmt.Sprintf("record %08d", n); sc.Text() != want {
			t.Fatalf("line %d = %q, want %q", n, strings.TrimSpace(sc.Text()), want)
		}
		n++
	}
	if n <= last {
		t.Errorf("the file holds %d records, but %d were fsynced", n, last+1)
	}
}
