package gzip

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// testData is n bytes of a disk-like mix: runs of zeros, text and random
// bytes, in 4 KiB pieces.
func testData(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	words := []string{"nbdloop ", "block ", "device ", "gzip ", "sector ", "\n"}
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

// gzipTool compresses data with the real gzip.
func gzipTool(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("gzip"); err != nil {
		t.Fatal("gzip not found: install gzip (scripts/install-deps.sh)")
	}
	cmd := exec.Command("gzip", append([]string{"-c"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("gzip %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func random(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func open(t *testing.T, file []byte, opts Options) *Source {
	t.Helper()
	s, err := Open(bytes.NewReader(file), int64(len(file)), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func checkReads(t *testing.T, s *Source, want []byte) {
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

func TestGzipFixtures(t *testing.T) {
	a := testData(3<<20+100, 1)
	b := testData(1<<20+7, 2)
	ag := gzipTool(t, a)
	bg := gzipTool(t, b, "-9")
	stored := cat(b[:300<<10], random(2<<20, 3), b[:300<<10], random(1<<20, 4))
	var members [][]byte
	for off := 0; off < len(b); off += 64 << 10 {
		members = append(members, gzipTool(t, b[off:min(len(b), off+64<<10)], "-1"))
	}
	tests := []struct {
		name    string
		file    []byte
		want    []byte
		members int
		warn    string
	}{
		{name: "gzip", file: ag, want: a, members: 1},
		{name: "gzip -1", file: gzipTool(t, a, "-1"), want: a, members: 1},
		{name: "cat a.gz b.gz", file: cat(ag, bg), want: cat(a, b), members: 2},
		{name: "many small members", file: cat(members...), want: b, members: len(members)},
		{name: "empty member", file: cat(gzipTool(t, nil), bg), want: b, members: 2},
		{name: "trailing zeros", file: cat(bg, make([]byte, 512)), want: b, members: 1, warn: "512 bytes after the last gzip member"},
		{name: "file name and comment", file: gzipTool(t, b, "-N"), want: b, members: 1},
		// Incompressible data makes stored blocks, after which
		// klauspost/compress reports checkpoint offsets too far.
		{name: "stored blocks", file: gzipTool(t, stored, "-1"), want: stored, members: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, tt.file, Options{Interval: 256 << 10})
			defer s.Close()
			if s.Members() != tt.members {
				t.Errorf("Members() = %d, want %d", s.Members(), tt.members)
			}
			if min := len(tt.want) / (512 << 10); s.Checkpoints() < min {
				t.Errorf("Checkpoints() = %d, want at least %d", s.Checkpoints(), min)
			}
			if w := strings.Join(s.Warnings(), "\n"); !strings.Contains(w, tt.warn) || (tt.warn == "" && w != "") {
				t.Errorf("Warnings() = %q, want %q", w, tt.warn)
			}
			checkReads(t, s, tt.want)
		})
	}
}

func TestGzipConformance(t *testing.T) {
	data := testData(2<<20, 4)
	file := gzipTool(t, data)
	sourcetest.Run(t, func(t *testing.T) sources.Source { return open(t, file, Options{Interval: 300 << 10}) }, data)
}

// A saved index makes the second Open instant, and a file changed behind
// it fails reads instead of serving wrong bytes.
func TestGzipSavedIndex(t *testing.T) {
	dir := t.TempDir()
	data := testData(2<<20, 5)
	file := gzipTool(t, data)
	s := open(t, file, Options{Interval: 256 << 10, IndexDir: dir})
	if s.IndexLoaded() {
		t.Error("first Open: IndexLoaded() = true, want false")
	}
	s.Close()
	s = open(t, file, Options{Interval: 256 << 10, IndexDir: dir})
	if !s.IndexLoaded() {
		t.Error("second Open: IndexLoaded() = false, want true")
	}
	checkReads(t, s, data)
	s.Close()

	// Same size, head and tail; different bytes in the middle.
	changed := bytes.Clone(file)
	for i := len(file)/2 - 100; i < len(file)/2+100; i++ {
		changed[i] ^= 0xA5
	}
	s = open(t, changed, Options{Interval: 256 << 10, IndexDir: dir})
	defer s.Close()
	got := make([]byte, s.Size())
	_, err := s.ReadAt(got, 0)
	if err == nil || !strings.Contains(err.Error(), "the file changed since its gzip index was saved") {
		t.Errorf("ReadAt of a changed file = %v, want the changed-file error", err)
	}
	// A damaged index file is ignored and rebuilt.
	ents, _ := os.ReadDir(dir + "/gzip-index")
	if len(ents) != 1 {
		t.Fatalf("index directory holds %d files, want 1", len(ents))
	}
	path := dir + "/gzip-index/" + ents[0].Name()
	os.WriteFile(path, []byte("nbdloop gzip index 1\ngarbage"), 0o644)
	s2 := open(t, file, Options{Interval: 256 << 10, IndexDir: dir})
	defer s2.Close()
	if s2.IndexLoaded() {
		t.Error("Open with a damaged index: IndexLoaded() = true, want false")
	}
	checkReads(t, s2, data)
}

func TestGzipErrors(t *testing.T) {
	data := testData(1<<20, 8)
	good := gzipTool(t, data)
	flip := func(at int) []byte {
		c := bytes.Clone(good)
		c[at] ^= 0x55
		return c
	}
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{name: "truncated", file: good[:len(good)-100], want: "the file ends inside a member"},
		{name: "truncated trailer", file: good[:len(good)-4], want: "trailer"},
		{name: "crc", file: flip(len(good) - 6), want: "member CRC32 mismatch"},
		{name: "size", file: flip(len(good) - 2), want: "does not match its trailer"},
		{name: "deflate data", file: flip(len(good) / 2), want: "corrupt gzip data"},
		{name: "method", file: flip(2), want: "not a gzip file"},
		{name: "reserved flags", file: func() []byte { c := bytes.Clone(good); c[3] = 0x80; return c }(), want: "reserved header flags"},
		{name: "not gzip", file: bytes.Repeat([]byte{7}, 100), want: "not a gzip file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(bytes.NewReader(tt.file), int64(len(tt.file)), Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open = nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestGzipReadOnly(t *testing.T) {
	s := open(t, gzipTool(t, testData(4096, 1)), Options{})
	defer s.Close()
	if _, err := s.WriteAt([]byte{1}, 0); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("WriteAt = %v, want ErrReadOnly", err)
	}
}
