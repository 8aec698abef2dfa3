package gzip

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// random is n bytes that do not compress: gzip stores them.
func random(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestGzipFixtures(t *testing.T) {
	a := imagetest.Data(3<<20+100, 1)
	b := imagetest.Data(1<<20+7, 2)
	ag := imagetest.Gzip(t, a)
	bg := imagetest.Gzip(t, b, "-9")
	stored := imagetest.Cat(b[:300<<10], random(2<<20, 3), b[:300<<10], random(1<<20, 4))
	var members [][]byte
	for off := 0; off < len(b); off += 64 << 10 {
		members = append(members, imagetest.Gzip(t, b[off:min(len(b), off+64<<10)], "-1"))
	}
	tests := []struct {
		name    string
		file    []byte
		want    []byte
		members int
		warn    string
	}{
		{name: "gzip", file: ag, want: a, members: 1},
		{name: "gzip -1", file: imagetest.Gzip(t, a, "-1"), want: a, members: 1},
		{name: "cat a.gz b.gz", file: imagetest.Cat(ag, bg), want: imagetest.Cat(a, b), members: 2},
		{name: "many small members", file: imagetest.Cat(members...), want: b, members: len(members)},
		{name: "empty member", file: imagetest.Cat(imagetest.Gzip(t, nil), bg), want: b, members: 2},
		{name: "trailing zeros", file: imagetest.Cat(bg, make([]byte, 512)), want: b, members: 1, warn: "512 bytes after the last gzip member"},
		{name: "file name and comment", file: imagetest.Gzip(t, b, "-N"), want: b, members: 1},
		// Incompressible data makes stored blocks, after which
		// klauspost/compress reports checkpoint offsets too far.
		{name: "stored blocks", file: imagetest.Gzip(t, stored, "-1"), want: stored, members: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := imagetest.Open(t, Open, tt.file, Options{Interval: 256 << 10})
			defer s.Close()
			if s.Members() != tt.members {
				t.Errorf("Members() = %d, want %d", s.Members(), tt.members)
			}
			if min := len(tt.want) / (512 << 10); s.Checkpoints() < min {
				t.Errorf("Checkpoints() = %d, want at least %d", s.Checkpoints(), min)
			}
			imagetest.CheckWarnings(t, s.Warnings(), tt.warn)
			imagetest.CheckReads(t, s, tt.want)
		})
	}
}

func TestGzipConformance(t *testing.T) {
	data := imagetest.Data(2<<20, 4)
	file := imagetest.Gzip(t, data)
	sourcetest.Run(t, func(t *testing.T) sources.Source { return imagetest.Open(t, Open, file, Options{Interval: 300 << 10}) }, data)
}

// A saved index makes the second Open instant; a file changed behind it
// is indexed again, or fails reads if it changes while served.
func TestGzipSavedIndex(t *testing.T) {
	data := imagetest.Data(2<<20, 5)
	file := imagetest.Gzip(t, data)
	opts := Options{Interval: 256 << 10, IndexDir: t.TempDir()}

	// Readers without a file identity are matched by their SHA-256.
	s := imagetest.Open(t, Open, file, opts)
	if s.IndexLoaded() {
		t.Error("first Open: IndexLoaded() = true, want false")
	}
	imagetest.CheckWarnings(t, s.Warnings(), "")
	s.Close()
	s = imagetest.Open(t, Open, file, opts)
	if !s.IndexLoaded() {
		t.Error("second Open: IndexLoaded() = false, want true")
	}
	imagetest.CheckReads(t, s, data)
	s.Close()

	// An *os.File is matched by its identity; a write changes it.
	path := filepath.Join(t.TempDir(), "disk.gz")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true} {
		s := openPath(t, path, opts)
		if s.IndexLoaded() != want {
			t.Errorf("Open %d of the file: IndexLoaded() = %v, want %v", i+1, s.IndexLoaded(), want)
		}
		imagetest.CheckReads(t, s, data)
		s.Close()
	}
	st, _ := os.Stat(path)
	if err := os.WriteFile(path, file, 0o644); err != nil { // same bytes, new ctime
		t.Fatal(err)
	}
	os.Chtimes(path, st.ModTime(), st.ModTime())
	s = openPath(t, path, opts)
	if s.IndexLoaded() {
		t.Error("Open after a write: IndexLoaded() = true, want false")
	}
	s.Close()

	// Bytes that change under a loaded index fail reads.
	m := &mutable{b: bytes.Clone(file)}
	s, err := Open(m, int64(len(file)), opts)
	if err != nil || !s.IndexLoaded() {
		t.Fatalf("Open = %v, IndexLoaded() = %v", err, err == nil && s.IndexLoaded())
	}
	defer s.Close()
	m.mu.Lock()
	for i := len(file)/2 - 100; i < len(file)/2+100; i++ {
		m.b[i] ^= 0xA5
	}
	m.mu.Unlock()
	got := make([]byte, s.Size())
	_, err = s.ReadAt(got, 0)
	if err == nil || !strings.Contains(err.Error(), "the file changed since it was indexed") {
		t.Errorf("ReadAt of a changed file = %v, want the changed-file error", err)
	}
}

// mutable is a ReaderAt whose bytes a test changes.
type mutable struct {
	mu sync.Mutex
	b  []byte
}

func (m *mutable) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.NewReader(m.b).ReadAt(p, off)
}

// openPath opens the gzip file at path as an *os.File.
func openPath(t *testing.T, path string, opts Options) *Source {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	s, err := Open(f, st.Size(), opts)
	if err != nil {
		f.Close()
		t.Fatalf("Open(%s) = %v", path, err)
	}
	return s
}

func TestGzipErrors(t *testing.T) {
	data := imagetest.Data(1<<20, 8)
	good := imagetest.Gzip(t, data)
	flip := func(at int) []byte { return imagetest.Flip(good, at) }
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
			if strings.HasPrefix(err.Error(), "corrupt gzip data") != errors.Is(err, ErrCorrupt) {
				t.Errorf("Open = %q: errors.Is(err, ErrCorrupt) = %v", err, errors.Is(err, ErrCorrupt))
			}
		})
	}
}

func TestGzipReadOnly(t *testing.T) {
	s := imagetest.Open(t, Open, imagetest.Gzip(t, imagetest.Data(4096, 1)), Options{})
	defer s.Close()
	if _, err := s.WriteAt([]byte{1}, 0); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("WriteAt = %v, want ErrReadOnly", err)
	}
}
