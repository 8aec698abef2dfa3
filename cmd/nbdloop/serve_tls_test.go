package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tlstest"
	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// TestServeTLS serves an image with TLS to qemu-img, nbdinfo and nbdcopy
// (certificates made by certtool): with --tls=require a client with the CA
// works and one without it is refused, a plain-text client learns nothing
// about the exports, --tls-verify-peer wants a client certificate, and the
// bytes on the loopback (recorded by a relay) carry no plaintext of a
// known block read or of a random block written, which they do without
// TLS.
func TestServeTLS(t *testing.T) {
	tooltest.Require(t, "qemu-img", "nbdinfo", "nbdcopy")
	certs := tlstest.Make(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "nbdloop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The image: 4 MiB whose second MiB is text with a marker, the known
	// block a capture must not show.
	const marker = "KNOWN-BLOCK-"
	img := filepath.Join(dir, "disk.img")
	data := make([]byte, 4<<20)
	var known bytes.Buffer
	for i := 0; known.Len() < 1<<20; i++ {
		fmt.Fprintf(&known, "%s%07d nbdloop TLS test\n", marker, i)
	}
	copy(data[1<<20:2<<20], known.Bytes())
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := func(name string) string { return filepath.Join(dir, name) }
	nbds := func(s *server, certDir string) string {
		return "nbds+unix:///?socket=" + s.addrs["unix"] + "&tls-certificates=" + certDir
	}
	// qemu takes the credentials as an object; over a Unix socket it needs
	// the name to check the server's certificate against.
	qemuTLS := func(s *server, certDir string) []string {
		return []string{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + certDir, "--image-opts",
			"driver=nbd,server.type=unix,server.path=" + s.addrs["unix"] + ",tls-creds=tls0,tls-hostname=localhost"}
	}
	fails := func(t *testing.T, cmd *exec.Cmd, wants ...string) string {
		t.Helper()
		cmd.Env = append(append(os.Environ(), cmd.Env...), "LIBNBD_DEBUG=1", "PATH=/usr/bin:"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("%s succeeded, want refused:\n%s", strings.Join(cmd.Args, " "), out)
		}
		mustContain(t, cmd.Args[0], string(out), wants...)
		return string(out)
	}

	t.Run("require: clients with the CA", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("req.sock"), "--tls=require", "--tls-certificates", certs.Server, img)
		mustContain(t, "qemu-img info", client(t, exec.Command("qemu-img", append([]string{"info"}, qemuTLS(s, certs.CAOnly)...)...)), "virtual size: 4 MiB (4194304 bytes)")
		client(t, exec.Command("qemu-img", append(append([]string{"compare"}, qemuTLS(s, certs.CAOnly)...), "driver=file,filename="+img)...))
		mustContain(t, "nbdinfo", client(t, exec.Command("nbdinfo", nbds(s, certs.CAOnly))), "protocol: newstyle-fixed with TLS", "export-size: 4194304")
		copied := filepath.Join(dir, "copied.img")
		client(t, exec.Command("nbdcopy", nbds(s, certs.CAOnly), copied))
		client(t, exec.Command("cmp", copied, img))
		s.stop()
		mustContain(t, "serve's log", s.log(), "TLS require with the certificate in "+certs.Server, `export "" (4194304 bytes, flags `, "), TLS 1.3")
	})

	t.Run("require: clients without the CA are refused", func(t *testing.T) {
		// libnbd checks the server's certificate against a host name,
		// which a Unix socket lacks: over TCP to 127.0.0.1.
		s := startServe(t, bin, "--listen", "127.0.0.1:0", "--unix", sock("noca.sock"), "--tls=require", "--tls-certificates", certs.Server, img)
		tcp := func(certDir string) string { return "nbds://" + s.addrs["tcp"] + "/?tls-certificates=" + certDir }
		mustContain(t, "nbdinfo over TCP with the CA", client(t, exec.Command("nbdinfo", tcp(certs.CAOnly))), "export-size: 4194304")
		fails(t, exec.Command("nbdinfo", tcp(certs.Stranger)), "gnutls_handshake: Error in the certificate verification")
		fails(t, exec.Command("qemu-img", append([]string{"info"}, qemuTLS(s, certs.Stranger)...)...), "The certificate hasn't got a known issuer")
		s.stop()
		// The clients hang up when the certificate fails their check:
		// libnbd during the TLS handshake, qemu after it.
		mustContain(t, "serve's log", s.log(), "client 127.0.0.1:", "handshake failed: nbd: TLS handshake: ")
		if n := strings.Count(s.log(), "TLS 1.3"); n != 1 {
			t.Errorf("%d clients served over TLS, want 1 (the one with the CA):\n%s", n, s.log())
		}
	})

	t.Run("require: plain-text clients learn nothing", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("plain.sock"), "--tls=require", "--tls-certificates", certs.Server, "--export", "secret="+img)
		uri := "nbd+unix:///?socket=" + s.addrs["unix"]
		fails(t, exec.Command("nbdinfo", "--list", uri), "nbd_opt_list: server replied with error to list request", "server error message: TLS is required: send NBD_OPT_STARTTLS first")
		fails(t, exec.Command("qemu-img", "info", uri), "TLS negotiation required before option 7 (go)", "server reported: TLS is required")
		// A client written here, reading the raw replies: every option
		// but ABORT is refused, and no name, size or description comes.
		c, err := net.Dial("unix", s.addrs["unix"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		goData := func(name string, infos ...uint16) []byte {
			b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
			b = append(b, name...)
			b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
			for _, i := range infos {
				b = binary.BigEndian.AppendUint16(b, i)
			}
			return b
		}
		req := binary.BigEndian.AppendUint32(nil, 3) // FIXED_NEWSTYLE, NO_ZEROES
		for _, o := range []struct {
			opt  uint32
			data []byte
		}{{3, nil}, {6, goData("secret", 1, 2, 3)}, {6, goData("")}, {7, goData("secret")}, {8, nil}, {9, goData("")}, {2, nil}} {
			req = append(req, optionBytes(0, o.opt, uint32(len(o.data)))[4:]...)
			req = append(req, o.data...)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		b := got[18:]
		for len(b) >= 20 {
			opt, typ, n := binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:]), binary.BigEndian.Uint32(b[16:])
			if uint32(len(b)-20) < n {
				break
			}
			lines = append(lines, fmt.Sprintf("%d %#x %s", opt, typ, b[20:20+n]))
			b = b[20+n:]
		}
		const reqd = " 0x80000005 TLS is required: send NBD_OPT_STARTTLS first"
		want := []string{"3" + reqd, "6" + reqd, "6" + reqd, "7" + reqd, "8" + reqd, "9" + reqd, "2 0x1 "}
		if fmt.Sprint(lines) != fmt.Sprint(want) || len(b) != 0 {
			t.Errorf("replies to a plain-text client:\n%s\nwant:\n%s\n(%d bytes left)", strings.Join(lines, "\n"), strings.Join(want, "\n"), len(b))
		}
		var size [8]byte
		binary.BigEndian.PutUint64(size[:], 4<<20)
		if bytes.Contains(got, []byte(img)) || bytes.Contains(got, size[:]) {
			t.Errorf("the server told a plain-text client about its export: [% x]", got)
		}
		s.stop()
	})

	t.Run("verify-peer: a client certificate is required", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("peer.sock"), "--tls=require", "--tls-certificates", certs.Server, "--tls-verify-peer", img)
		fails(t, exec.Command("nbdinfo", nbds(s, certs.CAOnly)))
		mustContain(t, "nbdinfo with a certificate", client(t, exec.Command("nbdinfo", nbds(s, certs.Client))), "export-size: 4194304")
		mustContain(t, "qemu-img with a certificate", client(t, exec.Command("qemu-img", append([]string{"info"}, qemuTLS(s, certs.Client)...)...)), "virtual size: 4 MiB")
		s.stop()
		mustContain(t, "serve's log", s.log(), "clients must present a certificate signed by its ca-cert.pem",
			"handshake failed: nbd: TLS handshake: tls: client didn't provide a certificate",
			`TLS 1.3, client certificate "`+tlstest.ClientSubject+`"`)
	})

	t.Run("on: encrypted on the loopback, plain text when the client chooses it", func(t *testing.T) {
		// A block of random bytes, written through the server: no
		// window of it may cross the wire in clear under TLS, and every
		// one does without (the control that proves the capture sees the
		// data).
		random := make([]byte, 1<<20)
		if _, err := rand.Read(random); err != nil {
			t.Fatal(err)
		}
		randomFile := filepath.Join(dir, "random.img")
		if err := os.WriteFile(randomFile, random, 0o644); err != nil {
			t.Fatal(err)
		}
		s := startServe(t, bin, "--unix", sock("on.sock"), "--tls=on", "--tls-certificates", certs.Server, "--export", "="+img, "--export", "scratch=memory:1M")
		for _, tt := range []struct {
			name  string
			uri   func(addr, export string) string
			plain bool
		}{
			{"TLS", func(a, e string) string { return "nbds://" + a + "/" + e + "?tls-certificates=" + certs.CAOnly }, false},
			{"plain", func(a, e string) string { return "nbd://" + a + "/" + e }, true},
		} {
			relay := newRelay(t, s.addrs["unix"])
			out := filepath.Join(dir, "copy-"+tt.name+".img")
			client(t, exec.Command("nbdcopy", tt.uri(relay.addr, ""), out))
			client(t, exec.Command("cmp", out, img))
			client(t, exec.Command("nbdcopy", randomFile, tt.uri(relay.addr, "scratch")))
			back := filepath.Join(dir, "random-"+tt.name+".img")
			client(t, exec.Command("nbdcopy", tt.uri(relay.addr, "scratch"), back))
			client(t, exec.Command("cmp", back, randomFile))
			traffic := relay.bytes()
			if len(traffic) < 6<<20 {
				t.Fatalf("%s: the relay saw %d bytes, less than the data copied", tt.name, len(traffic))
			}
			if got := bytes.Contains(traffic, []byte(marker)); got != tt.plain {
				t.Errorf("%s: the known block's text on the wire: %v, want %v", tt.name, got, tt.plain)
			}
			seen, windows := 0, 0
			for off := 0; off < len(random); off += 64 << 10 {
				windows++
				if bytes.Contains(traffic, random[off:off+32]) {
					seen++
				}
			}
			if want := map[bool]int{true: windows, false: 0}[tt.plain]; seen != want {
				t.Errorf("%s: %d of %d windows of the random block on the wire, want %d", tt.name, seen, windows, want)
			}
		}
		s.stop()
		mustContain(t, "serve's log", s.log(), "TLS on with the certificate in", "TLS 1.3", "no TLS")
	})

	t.Run("off: STARTTLS refused", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("off.sock"), "--tls=off", img)
		fails(t, exec.Command("nbdinfo", nbds(s, certs.CAOnly)), "handshake: server error message: TLS is off on this server")
		mustContain(t, "plain nbdinfo", client(t, exec.Command("nbdinfo", s.uri(""))), "export-size: 4194304")
		s.stop()
		mustContain(t, "serve's log", s.log(), "TLS off")
	})

	t.Run("a key others can read is refused", func(t *testing.T) {
		bad := t.TempDir()
		for _, f := range []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"} {
			b, err := os.ReadFile(filepath.Join(certs.Server, f))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(bad, f), b, 0o644)
		}
		out, err := exec.Command(bin, "serve", "--unix", sock("bad.sock"), "--tls=require", "--tls-certificates", bad, img).CombinedOutput()
		key := filepath.Join(bad, "server-key.pem")
		if want := "nbdloop: TLS: " + key + ": other users may read the private key (mode 0644): chmod 600 " + key + "\n"; err == nil || string(out) != want {
			t.Errorf("serve with a readable key: %v, %q; want %q", err, out, want)
		}
	})
}

// relay passes the connections made to a TCP port on the loopback on to
// a Unix socket, and records the bytes of both directions: the capture on
// the loopback that a test can make without root or tcpdump.
type relay struct {
	addr string // 127.0.0.1:PORT
	mu   sync.Mutex
	rec  bytes.Buffer
}

func newRelay(t *testing.T, to string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("unix", to)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				io.Copy(dst, io.TeeReader(src, r))
				dst.(interface{ CloseWrite() error }).CloseWrite()
			}
			go pipe(s, c)
			go func() {
				pipe(c, s)
				c.Close()
				s.Close()
			}()
		}
	}()
	return r
}

func (r *relay) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec.Write(p)
}

func (r *relay) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.rec.Bytes())
}
