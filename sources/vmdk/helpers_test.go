package vmdk

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// qemuImg runs qemu-img, the oracle, and fails the test if it fails.
func qemuImg(t testing.TB, args ...string) string {
	t.Helper()
	tooltest.Require(t, "qemu-img")
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuIO runs qemu-io commands on a vmdk image.
func qemuIO(t testing.TB, img string, cmds ...string) {
	t.Helper()
	tooltest.Require(t, "qemu-io")
	args := []string{"-f", "vmdk"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, img)...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "error") {
		t.Fatalf("qemu-io %v %s: %v\n%s", cmds, img, err, out)
	}
}

// rawImage writes a raw file of size bytes in dir: random data in runs of
// varied lengths (some unaligned, some whole grains) between holes, so that
// converted images have allocated, partial and unallocated grains.
func rawImage(t testing.TB, dir string, size int64, seed uint64) string {
	t.Helper()
	path := filepath.Join(dir, "raw.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 7))
	write := func(off, n int64) {
		n = min(n, size-off)
		if n <= 0 {
			return
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 70000)                 // the first grains, the second one partly
	write(size-100000, 100000)      // the end
	write(size/2-3000, 1<<20+12345) // across the middle, unaligned
	for range 40 {
		write(r.Int64N(size), 1+r.Int64N(200000))
	}
	return path
}

// compareReaders compares got with want in chunks and reports the first
// difference. When want is a file, its holes are not read (reading GiBs of
// holes costs seconds of kernel time): got must read zeros there.
func compareReaders(t testing.TB, got, want io.ReaderAt, size int64) {
	t.Helper()
	const chunk = 8 << 20
	a, b := make([]byte, chunk), make([]byte, chunk)
	f, _ := want.(*os.File)
	for off := int64(0); off < size; {
		n := min(chunk, size-off)
		hole := false
		if f != nil {
			data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
			if err != nil { // ENXIO: only a hole up to the end
				data = size
			}
			if data > off {
				n, hole = min(n, data-off), true
			} else if h, err := unix.Seek(int(f.Fd()), off, unix.SEEK_HOLE); err == nil && h > off {
				n = min(n, h-off)
			}
		}
		if _, err := got.ReadAt(a[:n], off); err != nil && err != io.EOF {
			t.Fatalf("ReadAt(off=%d, len=%d): %v", off, n, err)
		}
		if hole {
			clear(b[:n])
		} else if _, err := want.ReadAt(b[:n], off); err != nil && err != io.EOF {
			t.Fatalf("reference ReadAt(off=%d, len=%d): %v", off, n, err)
		}
		if !bytes.Equal(a[:n], b[:n]) {
			for i := range n {
				if a[i] != b[i] {
					t.Fatalf("byte at %d = %#02x, want %#02x", off+i, a[i], b[i])
				}
			}
		}
		off += n
	}
}

func openFile(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// copyDir copies the regular files of src into a new temporary directory
// (keeping holes out of the question: the images are small or sparse
// through cp --sparse=always).
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	out, err := exec.Command("/bin/sh", "-c", `cp --sparse=always "$0"/* "$1"/`, src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return dst
}
