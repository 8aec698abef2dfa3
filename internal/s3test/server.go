package s3test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The server's identity: one access key with every right, and the region
// clients sign for (SeaweedFS accepts any).
const (
	AccessKey = "nbdloop-test"
	SecretKey = "nbdloop-test-secret-key"
	Region    = "us-east-1"
)

// ReadyTimeout bounds how long Start waits for the server to serve S3
// requests (a loaded machine, or the emulated VM, is slow to start it).
const ReadyTimeout = 6 * time.Minute

// Server is a running SeaweedFS whose S3 endpoint is Endpoint
// (http://127.0.0.1:PORT), with its data in Dir.
type Server struct {
	Endpoint string
	Dir      string

	bin   string
	args  []string
	log   *os.File
	cmd   *exec.Cmd
	done  chan struct{} // closed when cmd has been waited for
	state *os.ProcessState
}

// Start runs `weed server` with a master, a volume server, a filer and the
// S3 gateway, all on free loopback ports, with its data, configuration and
// log (weed.log) in dir (a directory the caller owns), until the test ends.
// It returns once the S3 endpoint answers an authenticated request, and
// fails the test if weed is missing, exits, or is not ready within
// ReadyTimeout.
func Start(t testing.TB, dir string) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Dir: dir, bin: bin}
	ports := freePorts(t, 8)
	conf := filepath.Join(dir, "s3.json")
	writeIdentities(t, conf)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	s.args = []string{"server", "-dir=" + data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port=" + p(0), "-master.port.grpc=" + p(1), "-master.telemetry=false",
		"-master.volumeSizeLimitMB=64", "-volume.max=64",
		"-volume.port=" + p(2), "-volume.port.grpc=" + p(3),
		"-filer", "-filer.port=" + p(4), "-filer.port.grpc=" + p(5),
		"-s3", "-s3.port=" + p(6), "-s3.port.grpc=" + p(7), "-s3.config=" + conf,
		"-s3.port.iceberg=0", "-s3.port.lance=0"}
	s.Endpoint = "http://127.0.0.1:" + p(6)
	t.Cleanup(func() { s.stop() })
	s.run(t)
	return s
}

// writeIdentities writes SeaweedFS's S3 configuration: the one identity.
func writeIdentities(t testing.TB, path string) {
	t.Helper()
	conf := map[string]any{"identities": []any{map[string]any{
		"name":        "nbdloop",
		"credentials": []any{map[string]string{"accessKey": AccessKey, "secretKey": SecretKey}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// run starts weed with s.args and waits until it serves S3 requests.
func (s *Server) run(t testing.TB) {
	t.Helper()
	log, err := os.OpenFile(filepath.Join(s.Dir, "weed.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatal(err)
	}
	s.cmd, s.log, s.done, s.state = cmd, log, make(chan struct{}), nil
	go func() {
		cmd.Wait()
		s.state = cmd.ProcessState
		close(s.done)
	}()
	if err := s.waitReady(); err != nil {
		t.Fatalf("SeaweedFS: %v; its log:\n%s", err, s.Log())
	}
}

// waitReady waits until an authenticated ListBuckets succeeds.
func (s *Server) waitReady() error {
	c := s.Client()
	deadline := time.Now().Add(ReadyTimeout)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("weed exited (%v) before it served S3 requests", s.state)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the S3 endpoint %s does not answer after %v: %v", s.Endpoint, ReadyTimeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Log returns what weed wrote to its log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "weed.log"))
	return string(b)
}

// Kill kills weed at once (SIGKILL), as a crash would, and waits for it.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.log.Close()
	s.cmd = nil
}

// Restart starts weed again on the same ports and data after Kill, and
// waits until it is ready.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill(t)
	s.run(t)
}

// stop asks weed to stop (SIGTERM), and kills it after ten seconds.
func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.log.Close()
	s.cmd = nil
}

// Env is the environment that points an AWS client (nbdloop, the aws CLI)
// at the server with its access key, without a profile or config file.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_REGION=" + Region,
		"AWS_ENDPOINT_URL=" + s.Endpoint,
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CA_BUNDLE=",
	}
}

// Client returns an S3 client of the server's identity, path-style.
func (s *Server) Client() *s3.Client {
	return s.ClientWith(AccessKey, SecretKey)
}

// ClientWith returns an S3 client that signs with the given key.
func (s *Server) ClientWith(accessKey, secretKey string) *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
		// Plain requests, as most clients of other stores send them.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}
