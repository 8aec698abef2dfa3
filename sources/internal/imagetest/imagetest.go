// Package imagetest holds test helpers for the compressed-image Sources
// (sources/xz, sources/gzip, sources/zstd): disk-like test data, fixtures
// made with the real xz, gzip and zstd tools, and byte-for-byte comparisons
// of random reads with the original data. It is imported only from
// _test.go files.
//
// The tools must be installed (scripts/install-deps.sh): a missing tool
// fails the test with internal/tooltest's message, it does not skip it.
package imagetest

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
)

// Data is n bytes of a disk-like mix: runs of zeros, text and random bytes,
// in 4 KiB pieces. The same n and seed give the same bytes.
func Data(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	words := []string{"nbdloop ", "block ", "device ", "image ", "sector ", "\n"}
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

// Cat concatenates parts, as cat a.xz b.xz does.
func Cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// Flip returns a copy of b with the byte at offset at damaged (XORed with
// 0x55).
func Flip(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x55
	return c
}

// XZ compresses data with the real xz and the given options, at -1 unless
// they give a level.
func XZ(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	level := "-1" // fast; a test that cares gives its own level
	for _, a := range args {
		if len(a) >= 2 && a[0] == '-' && a[1] >= '0' && a[1] <= '9' {
			level = a
		}
	}
	return run(t, "xz", bytes.NewReader(data), append([]string{"-c", "-q", level}, args...), args)
}

// Gzip compresses data with the real gzip and the given options.
func Gzip(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	return run(t, "gzip", bytes.NewReader(data), append([]string{"-c"}, args...), args)
}

// Zstd compresses data with the real zstd and the given options, from a
// file (so that the frame header holds the content size, unless
// --no-content-size).
func Zstd(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	f, err := os.CreateTemp("", "zstdtest")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	f.Write(data)
	f.Close()
	return run(t, "zstd", nil, append([]string{"-c", "-q"}, append(args, f.Name())...), args)
}

// run runs tool with argv and stdin, and returns its output; the test
// fails if the tool is missing (saying what to install, see tooltest) or
// fails (naming the caller's args).
func run(t testing.TB, tool string, stdin io.Reader, argv, args []string) []byte {
	t.Helper()
	tooltest.Require(t, tool)
	cmd := exec.Command(tool, argv...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v: %s", tool, strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

// Open opens file, a whole compressed image in memory, with a format's
// Open function, and fails the test if it fails.
func Open[S any, O any](t *testing.T, open func(io.ReaderAt, int64, O) (S, error), file []byte, opts O) S {
	t.Helper()
	s, err := open(bytes.NewReader(file), int64(len(file)), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// CheckReads checks that s serves want: its size, 60 random reads of up to
// 300 KiB from 4 goroutines at once, and one read of the whole, each byte
// for byte.
func CheckReads(t *testing.T, s sources.Source, want []byte) {
	t.Helper()
	if s.Size() != int64(len(want)) {
		t.Fatalf("Size() = %d, want %d", s.Size(), len(want))
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for k := 0; k < 15; k++ {
				off := rng.Int64N(s.Size())
				n := min(s.Size()-off, 1+rng.Int64N(300<<10))
				got := make([]byte, n)
				if _, err := s.ReadAt(got, off); err != nil {
					t.Errorf("ReadAt(off=%d, len=%d) = %v", off, n, err)
					return
				}
				if !bytes.Equal(got, want[off:off+n]) {
					t.Errorf("ReadAt(off=%d, len=%d): bytes differ from the original", off, n)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := make([]byte, s.Size())
	if _, err := s.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Errorf("ReadAt(whole) = %v, or bytes differ", err)
	}
}

// CheckWarnings checks a Source's warnings: joined by newlines, they must
// contain want, and be empty if want is "".
func CheckWarnings(t *testing.T, warnings []string, want string) {
	t.Helper()
	if w := strings.Join(warnings, "\n"); !strings.Contains(w, want) || (want == "" && w != "") {
		t.Errorf("Warnings() = %q, want %q", w, want)
	}
}

// ReadEnds reads the first and the last n bytes of s (fewer if s is
// smaller), ignoring errors: what a fuzz target does with an image that
// opened, to reach the decoders.
func ReadEnds(s sources.Source, n int64) {
	buf := make([]byte, min(s.Size(), n))
	s.ReadAt(buf, 0)
	s.ReadAt(buf, s.Size()-int64(len(buf)))
}
