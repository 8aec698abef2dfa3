package pack

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources/xz"
	"github.com/nbdloop/nbdloop/sources/zstd"
)

func testData(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	words := []string{"nbdloop ", "pack ", "block ", "\n"}
	for i := 0; i < n; i += 4096 {
		end := min(n, i+4096)
		switch rng.IntN(4) {
		case 0:
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

// tool runs a real decompressor on in.
func tool(t *testing.T, in []byte, name string, args ...string) []byte {
	t.Helper()
	tooltest.Require(t, name)
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

func pack(t *testing.T, data []byte, opts Options) ([]byte, Result) {
	t.Helper()
	var out bytes.Buffer
	res, err := Pack(&out, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		t.Fatalf("Pack(%+v): %v", opts, err)
	}
	if res.Out != int64(out.Len()) || res.In != int64(len(data)) {
		t.Errorf("Result = %+v, want In %d, Out %d", res, len(data), out.Len())
	}
	return out.Bytes(), res
}

func TestPackXZ(t *testing.T) {
	data := testData(3<<20+1234, 1)
	tests := []struct {
		name   string
		opts   Options
		blocks int
	}{
		{name: "default level", opts: Options{Format: XZ, BlockSize: 1 << 20, Level: -1}, blocks: 4},
		{name: "level 0", opts: Options{Format: XZ, BlockSize: 700 << 10, Level: 0, Workers: 3}, blocks: 5},
		{name: "one block", opts: Options{Format: XZ, BlockSize: 8 << 20, Level: 1}, blocks: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, res := pack(t, data, tt.opts)
			if res.Blocks != tt.blocks {
				t.Errorf("Blocks = %d, want %d", res.Blocks, tt.blocks)
			}
			// The real xz reads it, checks it and sees both sizes in
			// every block header (flags "cu" in xz --robot -lvv).
			if got := tool(t, out, "xz", "-dc"); !bytes.Equal(got, data) {
				t.Fatal("xz -dc of the packed file differs from the image")
			}
			tool(t, out, "xz", "-t")
			// Our xz source reads it at random.
			s, err := xz.Open(bytes.NewReader(out), int64(len(out)), xz.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if n := len(s.Index().Blocks); n != tt.blocks {
				t.Errorf("xz.Open finds %d blocks, want %d", n, tt.blocks)
			}
			got := make([]byte, len(data))
			if _, err := s.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
				t.Errorf("xz source ReadAt = %v, or bytes differ", err)
			}
		})
	}
}

func TestPackXZSizesInHeaders(t *testing.T) {
	tooltest.Require(t, "xz")
	data := testData(2<<20, 2)
	out, _ := pack(t, data, Options{Format: XZ, BlockSize: 512 << 10, Level: 0})
	// xz --list cannot read stdin: use a file.
	dir := t.TempDir()
	path := dir + "/p.xz"
	if err := writeFile(path, out); err != nil {
		t.Fatal(err)
	}
	b, err := exec.Command("xz", "--robot", "-lvv", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, "\t")
		if f[0] != "block" {
			continue
		}
		n++
		// block, stream, block in stream, block in file, cstart, ustart,
		// ctotal, usize, ratio,
		// check, checkvalue, headersize, flags, ... (xz 5.4)
		if len(f) < 13 || f[12] != "cu" {
			t.Errorf("block line %q: want flags cu (both sizes in the header)", line)
		}
	}
	if n != 4 {
		t.Errorf("xz --list shows %d blocks, want 4", n)
	}
}

func TestPackZstd(t *testing.T) {
	data := testData(3<<20+99, 3)
	for _, lvl := range []int{-1, 1, 19} {
		out, res := pack(t, data, Options{Format: Zstd, BlockSize: 1 << 20, Level: lvl, Workers: 2})
		if res.Blocks != 4 {
			t.Errorf("level %d: Blocks = %d, want 4", lvl, res.Blocks)
		}
		if got := tool(t, out, "zstd", "-dc"); !bytes.Equal(got, data) {
			t.Fatalf("level %d: zstd -dc of the packed file differs from the image", lvl)
		}
		s, err := zstd.Open(bytes.NewReader(out), int64(len(out)), zstd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !s.Seekable() || len(s.Frames()) != 4 {
			t.Errorf("level %d: zstd.Open: seekable %v, %d frames, want true, 4", lvl, s.Seekable(), len(s.Frames()))
		}
		got := make([]byte, len(data))
		if _, err := s.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
			t.Errorf("level %d: zstd source ReadAt = %v, or bytes differ", lvl, err)
		}
		s.Close()
	}
}

// The output does not depend on how many workers compressed it.
func TestPackDeterministic(t *testing.T) {
	data := testData(2<<20, 4)
	for _, f := range []string{XZ, Zstd} {
		a, _ := pack(t, data, Options{Format: f, BlockSize: 256 << 10, Level: 1, Workers: 1})
		b, _ := pack(t, data, Options{Format: f, BlockSize: 256 << 10, Level: 1, Workers: 4})
		if !bytes.Equal(a, b) {
			t.Errorf("%s: output with 1 and 4 workers differs", f)
		}
	}
}

func TestPackProgress(t *testing.T) {
	data := testData(1<<20+5, 5)
	var last int64
	calls := 0
	pack(t, data, Options{Format: Zstd, BlockSize: 100 << 10, Level: 1, Progress: func(in, out int64) {
		if in <= last {
			t.Errorf("Progress(%d) after %d: want increasing", in, last)
		}
		last = in
		calls++
	}})
	if last != int64(len(data)) || calls != 11 {
		t.Errorf("Progress: %d calls, last %d, want 11 calls ending at %d", calls, last, len(data))
	}
}

func TestPackErrors(t *testing.T) {
	data := testData(4096, 6)
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{name: "format", opts: Options{Format: "lz4"}, want: `unknown format "lz4"`},
		{name: "xz level", opts: Options{Format: XZ, Level: 10}, want: "xz level must be from 0 to 9"},
		{name: "zstd level", opts: Options{Format: Zstd, Level: 23}, want: "zstd level must be from 1 to 22"},
		{name: "block size", opts: Options{Format: XZ, Level: 1, BlockSize: 2 << 30}, want: "larger than 1 GiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Pack(&bytes.Buffer{}, bytes.NewReader(data), int64(len(data)), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Pack = %v, want %q", err, tt.want)
			}
		})
	}
	// A read error stops Pack and is returned.
	_, err := Pack(&bytes.Buffer{}, bytes.NewReader(data), int64(len(data))+10000, Options{Format: Zstd, Level: 1, BlockSize: 1024})
	if err == nil || !strings.Contains(err.Error(), "reading bytes") {
		t.Errorf("Pack past the end of the image = %v, want a read error", err)
	}
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o644) }
