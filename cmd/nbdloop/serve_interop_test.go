package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tlstest"
	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// interopProgram is one of libnbd's interop tests (the C programs of its
// interop/ directory), compiled as its Makefile.am compiles them for
// nbdkit and qemu-nbd, with nbdloop serve as the server.
type interopProgram struct {
	name   string
	source string   // in interop/
	macros []string // -D definitions, SERVER and SERVER_PARAMS among them
	args   []string // the command line (structured-read takes the server's)
	log    []string // in the program's output, nbdloop serve's log included
}

// TestServeLibnbdInterop compiles libnbd's own interop tests, from the
// source of Debian's libnbd (scripts/libnbd-source.sh), against
// libnbd-dev, and runs each with nbdloop serve, started by socket
// activation (nbd_connect_systemd_socket_activation) as they start
// qemu-nbd. Each must exit 0. The ones that do not apply: the TLS-PSK
// variants (nbdloop serve has X.509 only: Go's crypto/tls has no PSK),
// dirty-bitmap (qemu's qemu:dirty-bitmap context), the nbd-server variants
// (nbd_connect_command: a server on its stdin), and the shell scripts that
// start qemu-nbd or qemu-storage-daemon themselves.
func TestServeLibnbdInterop(t *testing.T) {
	tooltest.Require(t, "gcc", "pkg-config", "dpkg-query", "dpkg-source", "apt-get", "qemu-img", "qemu-io")
	out, err := exec.Command(filepath.Join("..", "..", "scripts", "libnbd-source.sh")).Output()
	if err != nil {
		t.Fatalf("scripts/libnbd-source.sh: %v\n%s", err, stderrOf(err))
	}
	src := strings.TrimSpace(string(out))
	out, err = exec.Command("pkg-config", "--cflags", "--libs", "libnbd").Output()
	if err != nil {
		t.Fatalf("pkg-config libnbd: %v\n%s", err, stderrOf(err))
	}
	libnbd := strings.Fields(string(out))

	// The layout of libnbd's build tree: the programs run in interop/ and
	// find the certificates in ../tests/pki.
	dir := t.TempDir()
	bin := filepath.Join(dir, "nbdloop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	work, pki, build := filepath.Join(dir, "interop"), filepath.Join(dir, "tests", "pki"), filepath.Join(dir, "build")
	for _, d := range []string{work, pki, build} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	interopPKI(t, pki)
	// libnbd's configure writes config.h; these programs need none of it
	// (without HAVE_GNUTLS they skip GnuTLS's debug log hook).
	if err := os.WriteFile(filepath.Join(build, "config.h"), []byte("/* libnbd's interop tests built by nbdloop's tests */\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// list-exports's disks: libnbd's fixtures are empty files, which
	// nbdloop refuses to serve (no bytes to serve): 1 MiB ones instead.
	disk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	disk1, disk2 := disk("disk1"), disk("disk2")
	// structured-read's image, made as its structured-read.sh makes it:
	// 3 KiB of 1s in 512-byte clusters but a zero cluster at 2 KiB.
	qcow2 := filepath.Join(dir, "structured-read.qcow2")
	client(t, exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512,compat=v3", qcow2, "3k"))
	client(t, exec.Command("qemu-io", "-d", "unmap", "-f", "qcow2", "-c", "w -P 1 0 3k", "-c", "w -zu 2k 512", qcow2))

	q := strconv.Quote
	server := "SERVER=" + q(bin)
	params := func(p ...string) string { return "SERVER_PARAMS=" + strings.Join(p, ", ") }
	tmpfile := []string{"SOCKET_ACTIVATION=1", "NEEDS_TMPFILE=1", server}
	served := "listening on unix /tmp/libnbd"
	for _, p := range []interopProgram{
		{name: "interop-nbdloop", source: "interop.c",
			macros: append(tmpfile, params(q("serve"), "TMPFILE")),
			log:    []string{served, `export "" (1048576 bytes`, "no TLS"}},
		// As interop-qemu-nbd, which serves its file as the export "/".
		{name: "interop-nbdloop-export-name", source: "interop.c",
			macros: []string{"SOCKET_ACTIVATION=1", server, params(q("serve"), q("--export"), q("/=memory:1M")), "EXPORT_NAME=" + q("/")},
			log:    []string{served, `export "/" (1048576 bytes`}},
		{name: "interop-nbdloop-tls-certs", source: "interop.c",
			macros: append(tmpfile, params(q("serve"), q("--tls=require"), q("--tls-certificates=../tests/pki"), "TMPFILE"), "CERTS=1", "TLS_MODE=LIBNBD_TLS_REQUIRE"),
			log:    []string{served, "TLS require", "TLS 1.3"}},
		{name: "interop-nbdloop-tls-certs-allow-enabled", source: "interop.c",
			macros: append(tmpfile, params(q("serve"), q("--tls=require"), q("--tls-certificates=../tests/pki"), "TMPFILE"), "CERTS=1", "TLS_MODE=LIBNBD_TLS_ALLOW"),
			log:    []string{served, "TLS require", "TLS 1.3"}},
		{name: "interop-nbdloop-tls-certs-allow-fallback", source: "interop.c",
			macros: append(tmpfile, params(q("serve"), q("--tls=off"), "TMPFILE"), "CERTS=1", "TLS_MODE=LIBNBD_TLS_ALLOW", "TLS_FALLBACK=1"),
			log:    []string{served, "TLS off", "no TLS"}},
		{name: "socket-activation-nbdloop", source: "socket-activation.c",
			macros: []string{server, params(q("serve"), "tmpfile")},
			log:    []string{served, `export "" (1048576 bytes`}},
		{name: "list-exports-nbdloop", source: "list-exports.c",
			macros: []string{"SOCKET_ACTIVATION=1", server,
				params(q("serve"), q("--read-only"), q("--export"), q("disk1="+disk1), q("--export"), q("disk2="+disk2)),
				"EXPORTS=" + q("disk1") + ", " + q("disk2"), "DESCRIPTIONS=" + q(disk1) + ", " + q(disk2)},
			log: []string{served, `append: i=1 name="disk2" description="` + disk2 + `"`}},
		{name: "structured-read", source: "structured-read.c",
			args: []string{bin, "serve", qcow2},
			log:  []string{served, `export "": ` + qcow2 + " (qcow2) (3072 bytes"}},
	} {
		t.Run(p.name, func(t *testing.T) {
			prog := filepath.Join(build, p.name)
			cc := []string{"-o", prog, "-I", build, "-I", filepath.Join(src, "common", "include")}
			for _, m := range p.macros {
				cc = append(cc, "-D"+m)
			}
			cc = append(append(cc, filepath.Join(src, "interop", p.source)), libnbd...)
			if out, err := exec.Command("gcc", cc...).CombinedOutput(); err != nil {
				t.Fatalf("gcc %s: %v\n%s", strings.Join(cc, " "), err, out)
			}
			log := runInterop(t, work, prog, p.args...)
			mustContain(t, p.name+"'s output", log, p.log...)
		})
	}
}

// interopPKI lays out certificates as libnbd's tests/make-pki.sh does:
// one directory with the CA, the server's and a client's certificate
// and key.
func interopPKI(t *testing.T, pki string) {
	t.Helper()
	certs := tlstest.Make(t)
	for _, f := range []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"} {
		copyFile(t, filepath.Join(certs.Server, f), filepath.Join(pki, f))
	}
	for _, f := range []string{"client-cert.pem", "client-key.pem"} {
		copyFile(t, filepath.Join(certs.Client, f), filepath.Join(pki, f))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runInterop runs prog in dir with libnbd's debug output, as libnbd's
// test harness does, and returns its output (nbdloop serve's log is part
// of it); it fails the test unless prog exits 0 (77, a skip, fails too).
// The program and the server it started are one process group, killed at
// the end: a program that fails an assertion leaves its server running.
func runInterop(t *testing.T, dir, prog string, args ...string) string {
	t.Helper()
	logFile, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LIBNBD_DEBUG=1")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	out, rerr := os.ReadFile(logFile.Name())
	if rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatalf("%s %s: %v (77 is libnbd's skip)\n%s", filepath.Base(prog), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// stderrOf is the standard error an exec.ExitError kept, if any.
func stderrOf(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}
	return nil
}
