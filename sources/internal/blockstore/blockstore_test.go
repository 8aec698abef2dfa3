package blockstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const bs = 4096

func testDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func testOpts(dir string) Options {
	return Options{Dir: dir, Location: "https://h/disk.img", Pin: `etag:"1"`, Size: 10*bs + 100, BlockSize: bs, Limit: 4 * bs}
}

// block returns the bytes of block b of a test object.
func block(b int64, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(int(b)*7 + i%251)
	}
	return p
}

// put stores block b whole.
func put(t *testing.T, s *Store, b int64) {
	t.Helper()
	p := block(b, int(s.blockLen(b)))
	i := s.Reserve(b)
	if i < 0 {
		t.Fatalf("Reserve(%d) = -1", b)
	}
	half := len(p) / 2
	if !s.Write(i, p[:half], 0) || !s.Write(i, p[half:], int64(half)) {
		t.Fatalf("Write of block %d failed", b)
	}
	s.Commit(i, int64(len(p)), Update(Sum(b, p[:half]), p[half:]))
}

func get(s *Store, b int64) ([]byte, bool) {
	p := make([]byte, s.blockLen(b))
	ok := s.Get(b, p)
	return p, ok
}

func TestReopen(t *testing.T) {
	dir := testDir(t)
	s, err := Open(testOpts(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []int64{0, 3, 10} {
		put(t, s, b)
	}
	if _, err := Open(testOpts(dir)); !errors.Is(err, ErrBusy) {
		t.Errorf("second Open while the first is open: %v, want ErrBusy", err)
	}
	s.Close()
	s, err = Open(testOpts(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, b := range []int64{0, 3, 10} {
		p, ok := get(s, b)
		if !ok || !bytes.Equal(p, block(b, len(p))) {
			t.Errorf("block %d after reopening: ok %v, right bytes %v", b, ok, bytes.Equal(p, block(b, len(p))))
		}
	}
	if _, ok := get(s, 1); ok {
		t.Error("block 1, never stored, is held")
	}
	if st := s.Stats(); st.Hits != 3 || st.Held != 3 || st.Slots != 4 {
		t.Errorf("Stats = %+v, want 3 hits, 3 held, 4 slots", st)
	}
	fi, err := os.Stat(s.Name())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode())
	}
}

func TestVersionChange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Options)
	}{
		{"pin", func(o *Options) { o.Pin = `etag:"2"` }},
		{"size", func(o *Options) { o.Size += bs }},
		{"block size", func(o *Options) { o.BlockSize = 2 * bs; o.Limit = 8 * bs }},
		{"slots", func(o *Options) { o.Limit = 3 * bs }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testDir(t)
			s, err := Open(testOpts(dir))
			if err != nil {
				t.Fatal(err)
			}
			put(t, s, 0)
			s.Close()
			o := testOpts(dir)
			tc.change(&o)
			s, err = Open(o)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, ok := get(s, 0); ok {
				t.Error("a block of the old version was served")
			}
			if st := s.Stats(); st.Held != 0 {
				t.Errorf("%d blocks held, want 0", st.Held)
			}
		})
	}
}

func TestCorrupt(t *testing.T) {
	dir := testDir(t)
	s, err := Open(testOpts(dir))
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, 2)
	put(t, s, 5)
	name := s.Name()
	s.Close()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte in each slot's data: blocks 2 and 5 are in slots 0 and 1.
	dataOff := roundUp(headerSize+recordSize*4, 4096)
	for _, off := range []int64{dataOff + 100, dataOff + bs + bs - 1} {
		var b [1]byte
		f.ReadAt(b[:], off)
		b[0] ^= 0x40
		f.WriteAt(b[:], off)
	}
	f.Close()
	var lines []string
	o := testOpts(dir)
	o.Logf = func(format string, args ...any) { lines = append(lines, format) }
	s, err = Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, b := range []int64{2, 5} {
		if _, ok := get(s, b); ok {
			t.Errorf("corrupted block %d served", b)
		}
	}
	if st := s.Stats(); st.Corrupt != 2 || st.Held != 0 {
		t.Errorf("Stats = %+v, want 2 corrupt, 0 held", st)
	}
	if len(lines) != 2 {
		t.Errorf("%d lines logged, want 2", len(lines))
	}
	put(t, s, 2)
	if p, ok := get(s, 2); !ok || !bytes.Equal(p, block(2, len(p))) {
		t.Error("block 2 stored again is not served")
	}
}

// TestMovedRecord: a record copied to another slot, or naming another
// block, fails the check: the CRC covers the block's number.
func TestMovedRecord(t *testing.T) {
	dir := testDir(t)
	s, err := Open(testOpts(dir))
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, 1)
	name := s.Name()
	s.Close()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var r [recordSize]byte
	f.ReadAt(r[:], headerSize)
	r[0] = 4 // block 3
	f.WriteAt(r[:], headerSize)
	f.Close()
	s, err = Open(testOpts(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := get(s, 3); ok {
		t.Error("block 1's bytes served as block 3")
	}
}

func TestEviction(t *testing.T) {
	s, err := Open(testOpts(testDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for b := range int64(11) {
		put(t, s, b)
		if st := s.Stats(); st.Held > 4 {
			t.Fatalf("%d blocks held, the bound is 4", st.Held)
		}
	}
	fi, err := os.Stat(s.Name())
	if err != nil {
		t.Fatal(err)
	}
	if max := s.dataOff + 4*bs; fi.Size() > max {
		t.Errorf("file of %d bytes, bound %d", fi.Size(), max)
	}
	held := 0
	for b := range int64(11) {
		if p, ok := get(s, b); ok {
			held++
			if !bytes.Equal(p, block(b, len(p))) {
				t.Errorf("block %d: wrong bytes", b)
			}
		}
	}
	if held != 4 {
		t.Errorf("%d blocks served, want 4", held)
	}
}

func TestReserve(t *testing.T) {
	s, err := Open(testOpts(testDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	i := s.Reserve(1)
	if s.Reserve(1) >= 0 {
		t.Error("a block being written was reserved twice")
	}
	if _, ok := get(s, 1); ok {
		t.Error("a block being written was served")
	}
	s.Commit(i, 10, 0) // short: not stored
	if _, ok := get(s, 1); ok {
		t.Error("a short block was stored")
	}
	for _, b := range []int64{-1, 11} {
		if s.Reserve(b) >= 0 {
			t.Errorf("Reserve(%d) took a slot", b)
		}
	}
	if s.Write(0, make([]byte, bs+1), 0) || s.Write(9, []byte{1}, 0) {
		t.Error("a write outside a slot was taken")
	}
}

// TestHostile: the directory and file checks of Open.
func TestHostile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir, file string)
		want  string
	}{
		{"dir writable by others", func(t *testing.T, dir, file string) { os.Chmod(dir, 0o777) }, "writable by its group or by others"},
		{"dir writable by group", func(t *testing.T, dir, file string) { os.Chmod(dir, 0o770) }, "writable by its group or by others"},
		{"dir of another user", func(t *testing.T, dir, file string) { os.Chown(dir, 4242, 4242) }, "belongs to user 4242"},
		{"symlink", func(t *testing.T, dir, file string) {
			os.WriteFile(filepath.Join(dir, "target"), nil, 0o600)
			os.Symlink("target", file)
		}, "too many levels of symbolic links"},
		{"fifo", func(t *testing.T, dir, file string) { mkfifo(t, file) }, "not a regular file"},
		{"mode", func(t *testing.T, dir, file string) { os.WriteFile(file, nil, 0o644); os.Chmod(file, 0o644) }, "mode 644"},
		{"owner", func(t *testing.T, dir, file string) { os.WriteFile(file, nil, 0o600); os.Chown(file, 4242, 4242) }, "belongs to user 4242"},
		{"hard link", func(t *testing.T, dir, file string) {
			os.WriteFile(filepath.Join(dir, "other"), nil, 0o600)
			os.Link(filepath.Join(dir, "other"), file)
		}, "2 links"},
		{"directory", func(t *testing.T, dir, file string) { os.Mkdir(file, 0o700) }, "is a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testDir(t)
			o := testOpts(dir)
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			file := s.Name()
			s.Close()
			os.Remove(file)
			tc.setup(t, dir, file)
			s, err = Open(o)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if _, _, err := Cached(dir, o.Location); err == nil && tc.name != "symlink" {
				t.Errorf("Cached succeeded")
			}
		})
	}
}

// TestGarbage: a file of any bytes is emptied or its bad records ignored,
// never trusted.
func TestGarbage(t *testing.T) {
	dir := testDir(t)
	o := testOpts(dir)
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, 0)
	name := s.Name()
	s.Close()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"truncated header", func(b []byte) []byte { return b[:100] }},
		{"header crc", func(b []byte) []byte { b[50]++; return b }},
		{"table cut", func(b []byte) []byte { return b[:headerSize+5] }},
		{"record out of range", func(b []byte) []byte { b[headerSize] = 200; return b }},
		{"record length", func(b []byte) []byte { b[headerSize+8]++; return b }},
		{"duplicate record", func(b []byte) []byte { copy(b[headerSize+recordSize:], b[headerSize:headerSize+recordSize]); return b }},
		{"empty", func(b []byte) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(bytes.Clone(raw))
			if err := os.WriteFile(name, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for b := range int64(11) {
				if p, ok := get(s, b); ok && !bytes.Equal(p, block(b, len(p))) {
					t.Errorf("block %d: wrong bytes served", b)
				}
			}
			if st := s.Stats(); st.Held > 1 {
				t.Errorf("%d blocks held, at most 1 is", st.Held)
			}
		})
	}
}

func TestCached(t *testing.T) {
	dir := testDir(t)
	o := testOpts(dir)
	if _, ok, err := Cached(dir, o.Location); ok || err != nil {
		t.Errorf("Cached before any Open: %v, %v", ok, err)
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	v, ok, err := Cached(dir, o.Location)
	if err != nil || !ok || v != (Version{Pin: o.Pin, Size: o.Size, BlockSize: o.BlockSize}) {
		t.Errorf("Cached = %+v, %v, %v", v, ok, err)
	}
	if _, ok, _ := Cached(dir, "https://h/other.img"); ok {
		t.Error("Cached found another location's file")
	}
}
