//go:build kernel

package kerneltest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/nbdtest"
	"github.com/nbdloop/nbdloop/internal/tlstest"
)

// TestKernelServeNBDClient: the kernel's own client, nbd-client, against
// nbdloop serve, which serves an image file over a Unix socket, over TCP
// by export name, and over TCP with --tls=require and --tls-verify-peer
// (nbd-client's -cacertfile, -certfile, -keyfile): mkfs.ext4, mount, write
// a file, umount, nbd-client -d; then the served file is a clean ext4
// (e2fsck -fn) holding the file (debugfs dump), and serve logged the
// client with its export and TLS or not.
func TestKernelServeNBDClient(t *testing.T) {
	requireDriver(t)
	certs := tlstest.Make(t)
	cases := []struct {
		name string
		// serve is serve's options and SOURCE for the image img.
		serve func(img string) []string
		// connect is nbd-client's arguments before the device.
		connect func(sock, port string) []string
		// export and tls are what serve's client line must say (tls a
		// regular expression).
		export, tls string
	}{
		{"unix", func(img string) []string { return []string{img} },
			func(sock, port string) []string { return []string{"-unix", sock, "-N", ""} }, "", "no TLS"},
		{"tcp export", func(img string) []string { return []string{"--export", "disk=" + img} },
			func(sock, port string) []string { return []string{"-N", "disk", "127.0.0.1", port} }, "disk", "no TLS"},
		{"tls", func(img string) []string {
			return []string{"--tls=require", "--tls-certificates", certs.Server, "--tls-verify-peer", img}
		}, func(sock, port string) []string {
			return []string{"-N", "", "127.0.0.1", port, "-cacertfile", filepath.Join(certs.Client, "ca-cert.pem"),
				"-certfile", filepath.Join(certs.Client, "client-cert.pem"), "-keyfile", filepath.Join(certs.Client, "client-key.pem")}
		}, "", `TLS 1\.[23], client certificate "` + regexp.QuoteMeta(tlstest.ClientSubject) + `"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := scratch(t)
			img := filepath.Join(dir, "served.img")
			must(t, "truncate", "-s", "256M", img)
			sock := nbdtest.SocketPath(t)
			srv := nbdtest.Command(t, sock, "", append([]string{nbdloop(t), "serve", "--unix", sock, "--listen", "127.0.0.1:0"}, c.serve(img)...)...)
			dev := freeDevice(t)
			nbdClient(t, dev, c.connect(sock, tcpPort(t, srv))...)
			if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(256<<20) {
				t.Errorf("nbd-client's %s is %s bytes, want %d", dev, got, 256<<20)
			}
			must(t, "mkfs.ext4", "-q", dev)
			mnt := filepath.Join(dir, "mnt")
			os.Mkdir(mnt, 0o755)
			must(t, "mount", dev, mnt)
			t.Cleanup(func() { run(t, "umount", mnt) })
			ref := filepath.Join(dir, "ref")
			must(t, "dd", "if=/dev/urandom", "of="+ref, "bs=1M", "count=8", "status=none")
			must(t, "cp", ref, filepath.Join(mnt, "copy"))
			must(t, "umount", mnt)
			nbdClientDisconnect(t, dev)

			if r := run(t, "e2fsck", "-fn", img); r.code != 0 {
				t.Errorf("e2fsck -fn on the served file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			back := filepath.Join(dir, "back")
			must(t, "debugfs", "-R", "dump /copy "+back, img)
			if sha(t, back, 0) != sha(t, ref, 0) {
				t.Error("the file written through nbd-client reads back differently from the served image")
			}
			want := regexp.QuoteMeta(fmt.Sprintf(`export %q (%d bytes, flags `, c.export, 256<<20)) + `0x[0-9a-f]+\), ` + c.tls + "\n"
			if !regexp.MustCompile(want).MatchString(srv.Log()) {
				t.Errorf("serve's log has no client line matching %q:\n%s", want, srv.Log())
			}
			requireClean(t, "nbd-client "+c.name)
		})
	}
}

// TestKernelServeNbdkitProxy: nbdloop's client through nbdkit's nbd
// plugin (its client and server) to nbdloop serve, which serves an image
// file on a Unix socket: mkfs, mount, write, read back after dropping the
// caches, e2fsck; then the served file holds the file written.
func TestKernelServeNbdkitProxy(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	img := filepath.Join(dir, "served.img")
	must(t, "truncate", "-s", "256M", img)
	sock := nbdtest.SocketPath(t)
	srv := nbdtest.Command(t, sock, "", nbdloop(t), "serve", "--unix", sock, img)
	proxy := nbdtest.Nbdkit(t, "nbd", "socket="+sock)

	dev := attachDev(t, proxy.URI)
	if got := must(t, "blockdev", "--getsize64", dev); got != strconv.Itoa(256<<20) {
		t.Errorf("%s through nbdkit is %s bytes, want %d", dev, got, 256<<20)
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
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if sha(t, filepath.Join(mnt, "copy"), 0) != sha(t, ref, 0) {
		t.Error("the file reads back differently through nbdkit")
	}
	must(t, "umount", mnt)
	if r := run(t, "e2fsck", "-fn", dev); r.code != 0 {
		t.Errorf("e2fsck -fn through nbdkit: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	detach(t, dev)

	back := filepath.Join(dir, "back")
	must(t, "debugfs", "-R", "dump /copy "+back, img)
	if sha(t, back, 0) != sha(t, ref, 0) {
		t.Error("the file written through nbdkit reads back differently from the served image")
	}
	if !strings.Contains(srv.Log(), fmt.Sprintf(`export "" (%d bytes`, 256<<20)) {
		t.Errorf("serve's log has no line for nbdkit's connection:\n%s", srv.Log())
	}
	requireClean(t, "nbdkit proxy")
}

// TestKernelServeQemuIO: data written by one client reads back through
// another. qemu-io writes random data, a pattern and zeroes to a memory:
// export of nbdloop serve; the kernel reads the whole export through
// nbd-client (TCP) and through nbdloop attach nbd:// (TCP), both the same
// as a local file given the same writes. Then a write through the kernel
// reads back in qemu-img compare.
func TestKernelServeQemuIO(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	sock := nbdtest.SocketPath(t)
	srv := nbdtest.Command(t, sock, "", nbdloop(t), "serve", "--unix", sock, "--listen", "127.0.0.1:0", "memory:64M")
	port := tcpPort(t, srv)

	want := filepath.Join(dir, "want.img")
	data := filepath.Join(dir, "data")
	must(t, "truncate", "-s", "64M", want)
	must(t, "dd", "if=/dev/urandom", "of="+data, "bs=1M", "count=8", "status=none")
	// The same writes, to the local file: data at 1M, zeroes at 3M, 0x5a ('Z') at 20M.
	sh(t, "dd if="+data+" of="+want+" bs=1M seek=1 conv=notrunc status=none"+
		" && dd if=/dev/zero of="+want+" bs=1M seek=3 count=1 conv=notrunc status=none"+
		" && head -c 4M /dev/zero | tr '\\000' Z | dd of="+want+" bs=1M seek=20 conv=notrunc status=none")
	must(t, "qemu-io", "-f", "raw", srv.URI, "-c", "write -q -s "+data+" 1M 8M", "-c", "write -q -z 3M 1M", "-c", "write -q -P 0x5a 20M 4M")

	readers := []struct {
		name    string
		connect func(t *testing.T) (dev string, disconnect func())
	}{
		{"nbd-client", func(t *testing.T) (string, func()) {
			dev := freeDevice(t)
			nbdClient(t, dev, "-N", "", "127.0.0.1", port)
			return dev, func() { nbdClientDisconnect(t, dev) }
		}},
		{"nbdloop attach", func(t *testing.T) (string, func()) {
			dev := attachDev(t, "nbd://127.0.0.1:"+port+"/")
			return dev, func() { detach(t, dev) }
		}},
	}
	for _, r := range readers {
		t.Run(r.name, func(t *testing.T) {
			dev, disconnect := r.connect(t)
			got := sh(t, "dd if="+dev+" bs=1M iflag=direct status=none | sha256sum")
			if exp := sh(t, "sha256sum < "+want); got != exp {
				t.Errorf("%s reads the export differently from what qemu-io wrote", dev)
			}
			disconnect()
			requireClean(t, "qemu-io, "+r.name)
		})
	}

	dev := attachDev(t, "nbd://127.0.0.1:"+port+"/")
	must(t, "dd", "if="+data, "of="+dev, "bs=1M", "seek=40", "oflag=direct", "conv=fsync", "status=none")
	detach(t, dev)
	must(t, "dd", "if="+data, "of="+want, "bs=1M", "seek=40", "conv=notrunc", "status=none")
	if r := run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", srv.URI, want); r.code != 0 {
		t.Errorf("qemu-img compare after a write through the kernel: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	requireClean(t, "qemu-io")
}

var tcpListening = regexp.MustCompile(`listening on tcp \S+:(\d+)`)

// tcpPort waits for serve's log line of its TCP listener (--listen
// ADDR:0) and returns the port it picked.
func tcpPort(t *testing.T, srv *nbdtest.Server) string {
	t.Helper()
	var port string
	waitFor(t, 30*time.Second, "serve to log its TCP port", func() error {
		m := tcpListening.FindStringSubmatch(srv.Log())
		if m == nil {
			return fmt.Errorf("log: %q", srv.Log())
		}
		port = m[1]
		return nil
	})
	return port
}

// freeDevice returns the highest-numbered /dev/nbdN that no server holds,
// for clients that need a device named (nbd-client); nbdloop attach takes
// the lowest free one, so the two do not meet.
func freeDevice(t *testing.T) string {
	t.Helper()
	m, _ := filepath.Glob("/sys/block/nbd*")
	best := -1
	for _, p := range m {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), "nbd"))
		if err != nil || n <= best {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "pid")); err == nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(p, "size")); err != nil || strings.TrimSpace(string(b)) != "0" {
			continue
		}
		best = n
	}
	if best < 0 {
		t.Fatalf("no free nbd device among %v", m)
	}
	return "/dev/nbd" + strconv.Itoa(best)
}

// nbdClient connects dev with `nbd-client ARGS... DEV` and disconnects it
// at cleanup if it is still connected.
func nbdClient(t *testing.T, dev string, args ...string) {
	t.Helper()
	must(t, "nbd-client", append(args, dev)...)
	t.Cleanup(func() {
		if _, err := os.Stat(pidFile(dev)); err == nil {
			run(t, "nbd-client", "-d", dev)
		}
	})
}

// nbdClientDisconnect runs nbd-client -d and waits until the kernel lets
// go of dev.
func nbdClientDisconnect(t *testing.T, dev string) {
	t.Helper()
	must(t, "nbd-client", "-d", dev)
	waitFor(t, 30*time.Second, "the kernel to let go of "+dev, func() error {
		if _, err := os.Stat(pidFile(dev)); err == nil {
			return fmt.Errorf("%s still has a pid file", dev)
		}
		return nil
	})
}

// TestKernelServeTLSMemory: nbd-client with TLS to nbdloop serve of a
// memory: device, whose READs over TLS cannot use sendfile and are read
// from the RAM disk with pread: 16 MiB written with O_DIRECT at an
// offset that is not a multiple of 1 MiB, then 32 MiB read back with
// O_DIRECT in 1 MiB requests (holes, data, and requests over both) hold
// zeros around the data written.
func TestKernelServeTLSMemory(t *testing.T) {
	requireDriver(t)
	certs := tlstest.Make(t)
	dir := scratch(t)
	sock := nbdtest.SocketPath(t)
	srv := nbdtest.Command(t, sock, "", nbdloop(t), "serve", "--unix", sock, "--listen", "127.0.0.1:0",
		"--tls=require", "--tls-certificates", certs.Server, "memory:64M")
	dev := freeDevice(t)
	nbdClient(t, dev, "-N", "", "127.0.0.1", tcpPort(t, srv), "-cacertfile", filepath.Join(certs.Client, "ca-cert.pem"),
		"-certfile", filepath.Join(certs.Client, "client-cert.pem"), "-keyfile", filepath.Join(certs.Client, "client-key.pem"))
	const at = 8<<20 + 64<<10
	ref := filepath.Join(dir, "ref")
	must(t, "dd", "if=/dev/urandom", "of="+ref, "bs=1M", "count=16", "status=none")
	must(t, "dd", "if="+ref, "of="+dev, "bs=1M", "oflag=direct,seek_bytes", "seek="+strconv.Itoa(at), "status=none")
	back := filepath.Join(dir, "back")
	must(t, "dd", "if="+dev, "of="+back, "bs=1M", "count=32", "iflag=direct", "status=none")
	want := filepath.Join(dir, "want")
	must(t, "truncate", "-s", "32M", want)
	must(t, "dd", "if="+ref, "of="+want, "bs=1M", "oflag=seek_bytes", "seek="+strconv.Itoa(at), "conv=notrunc", "status=none")
	if sha(t, back, 0) != sha(t, want, 0) {
		t.Error("the RAM disk read back over TLS differs from the 16 MiB written between zeros")
	}
	nbdClientDisconnect(t, dev)
	requireClean(t, "nbd-client TLS memory:")
}
