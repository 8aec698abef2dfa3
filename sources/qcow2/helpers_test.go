package qcow2

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// qemuImg runs qemu-img (or qemu-io when the first argument is "io") and
// fails the test on a non-zero exit.
func qemuImg(t testing.TB, args ...string) string {
	t.Helper()
	out, code := qemuImgCode(t, args...)
	if code != 0 {
		t.Fatalf("qemu-img %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// qemuImgLUKS makes a 1 MiB LUKS-encrypted qcow2 image at img. qemu-img times
// its key derivation by the thread's CPU time, which the kernel counts in
// ticks; when a round finishes inside one tick it gives up with "Unable to get
// accurate CPU usage", so that one failure is tried again.
func qemuImgLUKS(t testing.TB, img string) {
	t.Helper()
	args := []string{"create", "-q", "--object", "secret,id=s0,data=pw", "-f", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", img, "1M"}
	for try := 1; ; try++ {
		out, code := qemuImgCode(t, args...)
		if code == 0 {
			return
		}
		if try == 20 || !strings.Contains(out, "Unable to get accurate CPU usage") {
			t.Fatalf("qemu-img %s: exit %d (try %d)\n%s", strings.Join(args, " "), code, try, out)
		}
		os.Remove(img)
	}
}

func qemuImgCode(t testing.TB, args ...string) (string, int) {
	t.Helper()
	tool := "qemu-img"
	if len(args) > 0 && args[0] == "io" {
		tool, args = "qemu-io", args[1:]
	}
	tooltest.Require(t, tool)
	cmd := exec.Command(tool, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return out.String(), 0
}

// testData returns n bytes that compress a little and a lot: runs of
// zeros, random bytes and repeated words, 4 KiB at a time.
func testData(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	words := []string{"qcow2 ", "cluster ", "refcount ", "L2 ", "sector ", "\n"}
	for i := 0; i < n; i += 4096 {
		end := min(n, i+4096)
		switch rng.IntN(4) {
		case 0: // zeros
		case 1:
			for j := i; j < end; j++ {
				b[j] = byte(rng.Uint32())
			}
		default:
			for j := i; j < end; {
				j += copy(b[j:end], words[rng.IntN(len(words))])
			}
		}
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// toRaw is the oracle: qemu-img convert -O raw.
func toRaw(t testing.TB, img string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "oracle.raw")
	qemuImg(t, "convert", "-O", "raw", img, out)
	return readFile(t, out)
}

func sha(t testing.TB, path string) string {
	t.Helper()
	s := sha256.Sum256(readFile(t, path))
	return hex.EncodeToString(s[:])
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	writeFile(t, to, readFile(t, from))
}

// firstDiff returns the first offset where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// runQemuImg is qemu-img for examples, which have no testing.T.
func runQemuImg(args ...string) (string, error) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return "", errors.New(tooltest.Message("qemu-img"))
	}
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	return string(out), err
}
