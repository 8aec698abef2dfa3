package lzma2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/ulikunitz/xz/lzma"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// xzRaw compresses data with the xz tool as raw LZMA2 with the given
// --lzma2 options.
func xzRaw(tb testing.TB, data []byte, opts string) []byte {
	tb.Helper()
	tooltest.Require(tb, "xz")
	cmd := exec.Command("xz", "--format=raw", "--lzma2="+opts, "-T1", "-c")
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("xz --lzma2=%s: %v: %s", opts, err, stderr.Bytes())
	}
	return out
}

// Test data, made once.
var (
	dataOnce sync.Once
	binData  []byte // from /usr/lib, /usr/bin
)

// binaries returns up to n bytes of the files under /usr/lib and /usr/bin
// (or pseudo text where they are missing), the kind of data disk images
// hold.
func binaries(n int) []byte {
	dataOnce.Do(func() {
		var b []byte
		for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib"} {
			filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if err != nil || len(b) >= 24<<20 {
					return filepath.SkipDir
				}
				if d.Type().IsRegular() {
					if f, err := os.ReadFile(path); err == nil {
						b = append(b, f...)
					}
				}
				return nil
			})
		}
		binData = b
	})
	if len(binData) < n {
		return append(append([]byte(nil), binData...), text(n-len(binData), 7)...)
	}
	return binData[:n]
}

func random(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// text is n bytes of words in pseudo-random order.
func text(n int, seed uint64) []byte {
	words := strings.Fields("the quick brown fox jumps over lazy dog nbd loop device block xz lzma range decoder dictionary chunk kernel read write sector image compressed offset size")
	r := rand.New(rand.NewPCG(seed, 2))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteString(".\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// mix is text, random bytes, zeros and binaries in turns of up to 256 KiB.
func mix(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	bin := binaries(n)
	b := make([]byte, 0, n)
	for len(b) < n {
		k := min(n-len(b), 1+r.IntN(256<<10))
		switch r.IntN(4) {
		case 0:
			b = append(b, text(k, r.Uint64())...)
		case 1:
			b = append(b, random(k, r.Uint64())...)
		case 2:
			b = append(b, make([]byte, k)...)
		case 3:
			b = append(b, bin[len(b):len(b)+k]...)
		}
	}
	return b
}

func kind(name string, n int) []byte {
	switch name {
	case "random":
		return random(n, 1)
	case "zeros":
		return make([]byte, n)
	case "text":
		return text(n, 1)
	case "mix":
		return mix(n, 1)
	case "bin":
		return binaries(n)
	}
	panic(name)
}

// decodeAll decodes in with a dictionary of dictCap bytes, reading with
// buffers of size bufSize.
func decodeAll(in io.Reader, dictCap, bufSize int) ([]byte, error) {
	z, err := NewReader(in, dictCap)
	if err != nil {
		return nil, err
	}
	var out []byte
	buf := make([]byte, bufSize)
	for {
		n, err := z.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

type testCase struct {
	kind string
	size int
	opts string // xz --lzma2 options
	dict int    // dictionary size in opts
}

func (c testCase) String() string {
	return fmt.Sprintf("%s/%d/%s", c.kind, c.size, c.opts)
}

func cases(short bool) []testCase {
	var cs []testCase
	add := func(kind string, size int, opts string, dict int) {
		cs = append(cs, testCase{kind, size, fmt.Sprintf("%s,dict=%d", opts, dict), dict})
	}
	for _, k := range []string{"random", "zeros", "text", "mix"} {
		for _, size := range []int{0, 1, 64 << 10} {
			for _, p := range []string{"preset=0", "preset=1", "preset=6", "preset=9e"} {
				add(k, size, p, 1<<20)
			}
		}
		add(k, 3<<20, "preset=0", 8<<20)
		add(k, 3<<20, "preset=6", 4<<20)
		// A dictionary smaller than the data: the decoder's wraps.
		add(k, 3<<20, "preset=1", 64<<10)
	}
	add("text", 3<<20, "preset=9e", 4<<20)
	add("mix", 3<<20, "preset=9e", 3<<20)
	add("bin", 3<<20, "preset=6", 1<<20)
	add("bin", 3<<20, "preset=6,lc=0,lp=4,pb=4", 4<<20)
	add("bin", 3<<20, "preset=6,lc=4,lp=0", 4<<20)
	add("bin", 3<<20, "preset=6,pb=0", 4<<20)
	add("mix", 3<<20, "preset=6,lc=1,lp=3,pb=1", 4<<20)
	add("text", 64<<10, "preset=6,lc=0,lp=4,pb=4", 4096)
	add("text", 64<<10, "preset=6,lc=4,lp=0,pb=0", 4096)
	add("mix", 3<<20, "preset=6,lc=2,lp=2,pb=3", 100_000) // not a power of 2
	if !short {
		add("mix", 20<<20, "preset=1", 8<<20)
		add("mix", 20<<20, "preset=6", 8<<20)
		add("bin", 20<<20, "preset=6", 2<<20)
	}
	return cs
}

// fixtures are compressed by xz once per test binary.
var (
	fixMu sync.Mutex
	fix   = map[string][2][]byte{}
)

func fixture(tb testing.TB, c testCase) (data, comp []byte) {
	fixMu.Lock()
	defer fixMu.Unlock()
	if f, ok := fix[c.String()]; ok {
		return f[0], f[1]
	}
	data = kind(c.kind, c.size)
	comp = xzRaw(tb, data, c.opts)
	fix[c.String()] = [2][]byte{data, comp}
	return data, comp
}

func TestDecodeXZ(t *testing.T) {
	for _, c := range cases(testing.Short()) {
		t.Run(c.String(), func(t *testing.T) {
			data, comp := fixture(t, c)
			for _, bc := range []struct {
				name    string
				in      func(io.Reader) io.Reader
				dictCap int
				bufSize int
			}{
				{"plain", nil, c.dict, 1 << 20},
				{"onebyte-in", iotest.OneByteReader, c.dict, 1 << 20},
				{"half-in-small-reads", iotest.HalfReader, c.dict, 1000},
				{"larger-dict", nil, c.dict*3 + 5, 64 << 10},
			} {
				if bc.name != "plain" && c.size > 3<<20 {
					continue
				}
				// Bytes after the end marker must stay unread.
				src := bytes.NewReader(append(append([]byte(nil), comp...), "tail"...))
				var in io.Reader = src
				if bc.in != nil {
					in = bc.in(in)
				}
				got, err := decodeAll(in, bc.dictCap, bc.bufSize)
				if err != nil {
					t.Fatalf("%s: %v", bc.name, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%s: decoded %d bytes, differing from the %d original ones at byte %d", bc.name, len(got), len(data), firstDiff(got, data))
				}
				if src.Len() != 4 {
					t.Fatalf("%s: %d bytes left after the end marker, want 4", bc.name, src.Len())
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestChunkKinds checks that the fixtures use every chunk kind.
func TestChunkKinds(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range cases(true) {
		_, comp := fixture(t, c)
		for _, k := range chunkKinds(comp) {
			seen[k] = true
		}
	}
	for _, k := range []string{"uncompressed+reset", "uncompressed", "lzma+dict", "lzma+props", "lzma+state", "lzma"} {
		if !seen[k] {
			t.Errorf("no fixture has a chunk of kind %s (seen %v)", k, seen)
		}
	}
}

// chunkKinds lists the kinds of the chunks of a valid stream.
func chunkKinds(b []byte) []string {
	var ks []string
	for len(b) > 0 {
		c := b[0]
		switch {
		case c == 0:
			return ks
		case c == 1 || c == 2:
			ks = append(ks, map[byte]string{1: "uncompressed+reset", 2: "uncompressed"}[c])
			n := int(b[1])<<8 | int(b[2]) + 1
			b = b[3+n:]
		default:
			ks = append(ks, []string{"lzma", "lzma+state", "lzma+props", "lzma+dict"}[c>>5&3])
			n := int(b[3])<<8 | int(b[4]) + 1
			h := 5
			if c >= 0xC0 {
				h = 6
			}
			b = b[h+n:]
		}
	}
	return ks
}

// TestDifferential decodes the fixtures with ulikunitz/xz too.
func TestDifferential(t *testing.T) {
	for _, c := range cases(true) {
		if c.size < 64<<10 {
			continue
		}
		data, comp := fixture(t, c)
		r, err := lzma.Reader2Config{DictCap: max(c.dict, lzma.MinDictCap)}.NewReader2(bytes.NewReader(comp))
		if err != nil {
			t.Fatal(err)
		}
		want, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("%s: ulikunitz: %v", c, err)
		}
		got, err := decodeAll(bytes.NewReader(comp), c.dict, 1<<16)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if !bytes.Equal(got, want) || !bytes.Equal(got, data) {
			t.Fatalf("%s: differs from ulikunitz at byte %d", c, firstDiff(got, want))
		}
	}
}

func TestReset(t *testing.T) {
	c1 := testCase{"mix", 3 << 20, "preset=6,dict=4194304", 4 << 20}
	c2 := testCase{"text", 64 << 10, "preset=6,lc=0,lp=4,pb=4,dict=4096", 4096}
	d1, z1 := fixture(t, c1)
	d2, z2 := fixture(t, c2)
	z, err := NewReader(bytes.NewReader(z1), c1.dict)
	if err != nil {
		t.Fatal(err)
	}
	// Stop half way, then reuse z for another stream, then the first.
	if _, err := io.ReadFull(z, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		data, comp []byte
		dict       int
	}{{d2, z2, c2.dict}, {d1, z1, c1.dict}, {d2, z2, c2.dict}} {
		if err := z.Reset(bytes.NewReader(c.comp), c.dict); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(z)
		if err != nil || !bytes.Equal(got, c.data) {
			t.Fatalf("stream %d after Reset: %v, %d bytes (want %d)", i, err, len(got), len(c.data))
		}
	}
	allocs := testing.AllocsPerRun(5, func() {
		z.Reset(bytes.NewReader(z2), c2.dict)
		io.Copy(io.Discard, z)
	})
	if allocs > 2 {
		t.Errorf("Reset and decode allocate %v times, want at most 2 (the bytes.Reader)", allocs)
	}
	if err := z.Reset(nil, 0); err == nil {
		t.Error("Reset accepts a dictionary of 0 bytes")
	}
}

// TestInvalid: hand-made streams that break a rule.
func TestInvalid(t *testing.T) {
	_, comp := fixture(t, testCase{"text", 64 << 10, "preset=6,dict=1048576", 1 << 20})
	if comp[0] != 0xE0 {
		t.Fatalf("fixture starts with control byte %#x, want 0xe0", comp[0])
	}
	mod := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), comp...))
	}
	for _, c := range []struct {
		name string
		in   []byte
		dict int
		want string
	}{
		{"empty", nil, 4096, "input ends"},
		{"bad control", []byte{0x03}, 4096, "invalid control byte"},
		{"no dict reset", []byte{0x02, 0, 0, 'x', 0}, 4096, "does not reset the dictionary"},
		{"lzma without props", []byte{0x01, 0, 0, 'x', 0xA0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0}, 4096, "without properties"},
		{"bad props", mod(func(b []byte) []byte { b[5] = 225; return b }), 1 << 20, "invalid properties"},
		{"lc+lp", mod(func(b []byte) []byte { b[5] = 4 + 9*1; return b }), 1 << 20, "lc+lp"},
		{"first byte", mod(func(b []byte) []byte { b[6] = 1; return b }), 1 << 20, "zero byte"},
		{"short chunk", []byte{0xE0, 0, 0, 0, 3, 0x5D, 0, 0, 0, 0}, 4096, "too few"},
		{"truncated", comp[:len(comp)/2], 1 << 20, "input ends"},
		{"no end marker", comp[:len(comp)-1], 1 << 20, "input ends"},
		{"uncompressed truncated", []byte{0x01, 0, 9, 'x'}, 4096, "input ends"},
		{"compressed size too large", mod(func(b []byte) []byte { b[4]++; return b }), 1 << 20, "range decoder"},
		{"compressed size too small", mod(func(b []byte) []byte { b[4]--; return b }), 1 << 20, ""},
		{"uncompressed size too large", mod(func(b []byte) []byte { b[2]++; return b }), 1 << 20, ""},
		{"dictionary too small", comp, 4096, "distance"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := decodeAll(bytes.NewReader(c.in), c.dict, 1<<16)
			if err == nil {
				t.Fatalf("decoded %d bytes without an error", len(out))
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "lzma2: ") {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("error %q does not wrap ErrCorrupt", err)
			}
		})
	}
}

// TestCorrupt flips bytes and truncates valid streams: an error or the
// right output, never a panic or a hang.
func TestCorrupt(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, c := range []testCase{
		{"mix", 64 << 10, "preset=6,dict=65536", 64 << 10},
		{"bin", 3 << 20, "preset=1,dict=65536", 64 << 10},
		{"text", 64 << 10, "preset=6,lc=0,lp=4,pb=4,dict=4096", 4096},
		{"random", 64 << 10, "preset=6,dict=1048576", 1 << 20},
	} {
		data, comp := fixture(t, c)
		n := 300
		if testing.Short() {
			n = 60
		}
		for i := 0; i < n; i++ {
			b := append([]byte(nil), comp...)
			off := r.IntN(len(b))
			if i < len(b) && i < 64 {
				off = i // every header byte
			}
			b[off] ^= byte(1 + r.IntN(255))
			out, err := decodeAll(bytes.NewReader(b), c.dict, 1<<16)
			if err == nil && !bytes.Equal(out, data) {
				// Possible (a flip in an uncompressed chunk's data), but
				// then the stream is valid: ulikunitz must agree.
				zr, _ := lzma.Reader2Config{DictCap: max(c.dict, lzma.MinDictCap)}.NewReader2(bytes.NewReader(b))
				want, uerr := io.ReadAll(zr)
				if uerr == nil && !bytes.Equal(out, want) {
					t.Errorf("%s: byte %d flipped: output differs from ulikunitz's", c, off)
				}
			}
		}
		for i := 0; i < n/4; i++ {
			b := comp[:r.IntN(len(comp))]
			if _, err := decodeAll(bytes.NewReader(b), c.dict, 1<<16); err == nil {
				t.Errorf("%s: cut to %d bytes: no error", c, len(b))
			}
		}
	}
}

// TestCopyBack checks the circular match copy against a byte loop.
func TestCopyBack(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		size := 1 + r.IntN(64)
		hist := random(size, uint64(i))
		pos := r.IntN(size)
		n := r.IntN(size-pos) + 1
		if pos+n > size {
			continue
		}
		dist := r.IntN(size)
		want := append([]byte(nil), hist...)
		src := (pos - dist - 1 + size) % size
		for k := 0; k < n; k++ {
			want[pos+k] = want[src]
			src = (src + 1) % size
		}
		copyBack(hist, pos, dist, n)
		if !bytes.Equal(hist, want) {
			t.Fatalf("size %d pos %d dist %d n %d: got %x want %x", size, pos, dist, n, hist, want)
		}
	}
}
