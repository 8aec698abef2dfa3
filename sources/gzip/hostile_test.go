package gzip

import (
	"bytes"
	stdgzip "compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// TestHostileGzip opens hostile gzip files and index caches: each is
// refused with a one-line error or served correctly (a damaged, forged or
// misplaced saved index is rebuilt, never used), within the test's memory
// budget, and nothing outside the image's directory is touched.
func TestHostileGzip(t *testing.T) {
	const budget = 64 << 20
	o := imagetest.NewOutside(t)
	// other has good's size and first and last 64 KiB, and other data in
	// between: the old index key (size and samples) could not tell them
	// apart.
	good, data, other, otherData := sameSample(t)
	var bombGz []byte
	bomb := func(t *testing.T) []byte {
		if bombGz == nil {
			bombGz = zeroGzip(t, 512<<20)
		}
		return bombGz
	}

	// write puts b in o.Dir under name and returns its path.
	write := func(name string, b []byte) string {
		p := filepath.Join(o.Dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// entryFor returns the path of the saved index of b read without an
	// identity, in the cache dir.
	entryFor := func(dir string, b []byte) string {
		sample, _ := fileSample(bytes.NewReader(b), int64(len(b)))
		return filepath.Join(dir, cacheSubdir, indexKey{sample: sample}.name())
	}
	// saveOf indexes b into a fresh cache dir and returns the dir and
	// the bytes of the entry.
	saveOf := func(b []byte) (string, []byte) {
		dir, _ := os.MkdirTemp(o.Dir, "cache")
		s, err := Open(bytes.NewReader(b), int64(len(b)), Options{Interval: 256 << 10, IndexDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		e, err := os.ReadFile(entryFor(dir, b))
		if err != nil {
			t.Fatal(err)
		}
		return dir, e
	}

	type setup struct {
		file      []byte // served from a bytes.Reader
		path      string // or opened from this path
		indexDir  string
		budget    int64 // 0: 64 MiB
		interval  int64
		want      []byte // nil: only zeros of wantSize
		wantSize  int64
		wantErr   string
		wantWarn  string
		notLoaded bool // the saved index must not be used
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) setup
	}{
		{name: "forged entry: another file with the same size and first and last 64 KiB", setup: func(t *testing.T) setup {
			dir, _ := saveOf(good) // other's key finds good's index
			return setup{file: other, indexDir: dir, want: otherData, notLoaded: true}
		}},
		{name: "forged entry: another file's index under this file's key, checksum redone", setup: func(t *testing.T) setup {
			dir, e := saveOf(good)
			os.Remove(entryFor(dir, good))
			// good's index, claiming other's sample.
			sample, _ := fileSample(bytes.NewReader(other), int64(len(other)))
			copy(e[len(indexMagic)+8+1+40:], sample[:])
			os.WriteFile(entryFor(dir, other), resum(e), 0o600)
			return setup{file: other, indexDir: dir, want: otherData, notLoaded: true}
		}},
		{name: "forged entry: another inode's index", setup: func(t *testing.T) setup {
			p := write("a.gz", good)
			dir, _ := os.MkdirTemp(o.Dir, "cache")
			f, _ := os.Open(p)
			s, err := Open(f, int64(len(good)), Options{Interval: 256 << 10, IndexDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			// b.gz: same bytes, another inode: its own index.
			return setup{path: write("b.gz", good), indexDir: dir, want: data, notLoaded: true}
		}},
		{name: "cache dir gzip-index is a symlink to a directory outside", setup: func(t *testing.T) setup {
			dir, _ := os.MkdirTemp(o.Dir, "cache")
			os.Symlink(o.Out, filepath.Join(dir, cacheSubdir))
			return setup{file: good, indexDir: dir, want: data, wantWarn: "is a symbolic link", notLoaded: true}
		}},
		{name: "IndexDir is a symlink to a directory outside", setup: func(t *testing.T) setup {
			dir := filepath.Join(o.Dir, "cachelink")
			os.Symlink(o.Out, dir)
			return setup{file: good, indexDir: dir, want: data, wantWarn: "is a symbolic link", notLoaded: true}
		}},
		{name: "cache dir writable by others", setup: func(t *testing.T) setup {
			dir, e := saveOf(good)
			_ = e
			os.Chmod(filepath.Join(dir, cacheSubdir), 0o777)
			return setup{file: good, indexDir: dir, want: data, wantWarn: "writable by others", notLoaded: true}
		}},
		{name: "entry is a symlink to a file outside", setup: func(t *testing.T) setup {
			dir, _ := saveOf(good)
			e := entryFor(dir, good)
			os.Remove(e)
			os.Symlink(o.Canary, e)
			return setup{file: good, indexDir: dir, want: data, notLoaded: true}
		}},
		{name: "entry is a FIFO", setup: func(t *testing.T) setup {
			dir, _ := saveOf(good)
			e := entryFor(dir, good)
			os.Remove(e)
			syscall.Mkfifo(e, 0o600)
			return setup{file: good, indexDir: dir, want: data, notLoaded: true}
		}},
		{name: "corrupted entry", setup: func(t *testing.T) setup {
			dir, e := saveOf(good)
			e[len(e)/2] ^= 1
			os.WriteFile(entryFor(dir, good), e, 0o600)
			return setup{file: good, indexDir: dir, want: data, notLoaded: true}
		}},
		{name: "truncated entry", setup: func(t *testing.T) setup {
			dir, e := saveOf(good)
			os.WriteFile(entryFor(dir, good), e[:len(e)-100], 0o600)
			return setup{file: good, indexDir: dir, want: data, notLoaded: true}
		}},
		{name: "crafted entry: 2^32-1 checkpoints", setup: func(t *testing.T) setup {
			dir, e := saveOf(good)
			binary.LittleEndian.PutUint32(e[len(indexMagic)+8+1+40+32+8+4+8:], 1<<32-1)
			os.WriteFile(entryFor(dir, good), resum(e), 0o600)
			return setup{file: good, indexDir: dir, want: data, notLoaded: true}
		}},
		{name: "crafted entry: checkpoint offset past the file", setup: func(t *testing.T) setup {
			dir, e := saveOf(good)
			binary.LittleEndian.PutUint64(e[len(indexMagic)+8+1+40+32+8+4+8+4+8:], 1<<62)
			os.WriteFile(entryFor(dir, good), resum(e), 0o600)
			return setup{file: good, indexDir: dir, want: data, notLoaded: true}
		}},
		{name: "crafted entry: window length 2^32-1", setup: func(t *testing.T) setup {
			dir, e := saveOf(good)
			binary.LittleEndian.PutUint32(e[len(indexMagic)+8+1+40+32+8+4+8+4+57:], 1<<32-1)
			os.WriteFile(entryFor(dir, good), resum(e), 0o600)
			return setup{file: good, indexDir: dir, want: data, notLoaded: true}
		}},
		{name: "truncated gzip", setup: func(t *testing.T) setup {
			return setup{file: good[:len(good)/2], wantErr: "the file ends inside a member"}
		}},
		{name: "truncated in the header", setup: func(t *testing.T) setup {
			return setup{file: imagetest.Cat(good, good[:6]), wantErr: "truncated member header"}
		}},
		{name: "bomb: 512 MiB of zeros in 500 KiB", setup: func(t *testing.T) setup {
			return setup{file: bomb(t), wantSize: 512 << 20, interval: -1}
		}},
		{name: "bomb: 512 MiB of zeros, index over a 2 KiB budget", setup: func(t *testing.T) setup {
			return setup{file: bomb(t), budget: 2 << 10, wantErr: "beyond the metadata limit of 2 KiB"}
		}},
		{name: "index over the budget", setup: func(t *testing.T) setup {
			// Incompressible data: every window deflates to 32 KiB.
			return setup{file: imagetest.Gzip(t, random(8<<20, 5), "-1"), budget: 1 << 20, interval: 64 << 10,
				wantErr: "beyond the metadata limit of 1 MiB"}
		}},
		{name: "multi-member with garbage after", setup: func(t *testing.T) setup {
			return setup{file: imagetest.Cat(good, imagetest.Gzip(t, data[:1000]), []byte("garbage, not gzip")),
				want: imagetest.Cat(data, data[:1000]), wantWarn: "17 bytes after the last gzip member"}
		}},
		{name: "multi-member with a damaged second member", setup: func(t *testing.T) setup {
			second := imagetest.Gzip(t, data[:100000])
			return setup{file: imagetest.Cat(good, imagetest.Flip(second, len(second)/2)), wantErr: "corrupt gzip data"}
		}},
		{name: "100000 empty members", setup: func(t *testing.T) setup {
			empty := imagetest.Gzip(t, nil)
			return setup{file: bytes.Repeat(empty, 100000), want: []byte{}}
		}},
		{name: "100000 one-byte members", setup: func(t *testing.T) setup {
			one := imagetest.Gzip(t, []byte{7})
			return setup{file: bytes.Repeat(one, 100000), want: bytes.Repeat([]byte{7}, 100000)}
		}},
		{name: "extra field 65535 bytes and a 1 MiB name", setup: func(t *testing.T) setup {
			h := []byte{0x1f, 0x8b, 8, flagExtra | flagName, 0, 0, 0, 0, 0, 3, 0xff, 0xff}
			h = append(h, make([]byte, 65535)...)
			h = append(h, bytes.Repeat([]byte{'n'}, 1<<20)...)
			h = append(h, 0)
			return setup{file: append(h, good[10:]...), want: data}
		}},
		{name: "name longer than 1 MiB", setup: func(t *testing.T) setup {
			h := []byte{0x1f, 0x8b, 8, flagName, 0, 0, 0, 0, 0, 3}
			h = append(h, bytes.Repeat([]byte{'n'}, 2<<20)...)
			return setup{file: append(h, good[10:]...), wantErr: "longer than"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.setup(t)
			o.Opened() // the setup's own accesses
			b := st.budget
			if b == 0 {
				b = budget
			}
			opts := Options{Budget: sources.NewBudget(b), IndexDir: st.indexDir, CacheSize: 16 << 20, Readahead: -1, Interval: 256 << 10}
			if st.interval != 0 {
				opts.Interval = max(st.interval, 0)
			}
			var s *Source
			var err error
			var readErr error
			alloc := imagetest.Allocated(func() {
				var r io.ReaderAt = bytes.NewReader(st.file)
				size := int64(len(st.file))
				if st.path != "" {
					f, ferr := os.Open(st.path)
					if ferr != nil {
						t.Fatal(ferr)
					}
					fi, _ := f.Stat()
					r, size = f, fi.Size()
				}
				s, err = Open(r, size, opts)
				if err != nil {
					return
				}
				// A few reads: start, middle, end.
				p := make([]byte, 64<<10)
				for _, off := range []int64{0, s.Size() / 2, max(0, s.Size()-int64(len(p)))} {
					n := min(int64(len(p)), s.Size()-off)
					if _, readErr = s.ReadAt(p[:n], off); readErr != nil {
						return
					}
					want := make([]byte, n)
					if st.want != nil {
						want = st.want[off : off+n]
					}
					if !bytes.Equal(p[:n], want) {
						t.Errorf("ReadAt(%d bytes at %d) served wrong bytes", n, off)
					}
				}
			})
			o.Check(t, tt.name)
			t.Logf("allocated %s", bytesize.Words(int64(alloc)))
			if alloc > imagetest.AllocBound(int64(budget)) {
				t.Errorf("Open and reads allocated %s, over the test's budget of %s", bytesize.Words(int64(alloc)), bytesize.Words(budget))
			}
			if st.wantErr != "" {
				if err == nil {
					s.Close()
					t.Fatalf("Open = nil error, want %q", st.wantErr)
				}
				if !strings.Contains(err.Error(), st.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Errorf("Open = %q, want one line containing %q", err, st.wantErr)
				}
				if used := opts.Budget.Used(); used != 0 {
					t.Errorf("after a failed Open the budget has %d bytes charged, want 0", used)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open = %v", err)
			}
			defer func() {
				s.Close()
				if used := opts.Budget.Used(); used != 0 {
					t.Errorf("after Close the budget has %d bytes charged, want 0", used)
				}
			}()
			if readErr != nil {
				t.Fatalf("ReadAt = %v", readErr)
			}
			if st.notLoaded && s.IndexLoaded() {
				t.Error("IndexLoaded() = true: the saved index was used")
			}
			wantSize := st.wantSize
			if st.want != nil {
				wantSize = int64(len(st.want))
			}
			if s.Size() != wantSize {
				t.Errorf("Size() = %d, want %d", s.Size(), wantSize)
			}
			if len(st.want) > 0 && len(st.want) <= 4<<20 {
				imagetest.CheckReads(t, s, st.want)
			}
			imagetest.CheckWarnings(t, s.Warnings(), st.wantWarn)
		})
	}
}

// sameSample returns two gzip files of the same size and the same first
// and last 64 KiB, with different data in between, and their data: three
// members each, the middle one stored (gzip level 0, so its length
// depends only on its data's) with other bytes.
func sameSample(t *testing.T) (a, aData, b, bData []byte) {
	t.Helper()
	head, tail := random(200<<10, 31), random(200<<10, 32)
	headGz, tailGz := imagetest.Gzip(t, head, "-1"), imagetest.Gzip(t, tail, "-1")
	x, y := random(300<<10, 33), random(300<<10, 34)
	a = imagetest.Cat(headGz, storedGzip(t, x), tailGz)
	b = imagetest.Cat(headGz, storedGzip(t, y), tailGz)
	if len(a) != len(b) {
		t.Fatalf("stored members of %d and %d bytes", len(a), len(b))
	}
	return a, imagetest.Cat(head, x, tail), b, imagetest.Cat(head, y, tail)
}

// storedGzip compresses data at level 0, with no name and no time.
func storedGzip(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := stdgzip.NewWriterLevel(&buf, stdgzip.NoCompression)
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zeroGzip returns n zero bytes compressed by gzip -9, from a pipe.
func zeroGzip(t *testing.T, n int64) []byte {
	t.Helper()
	tooltest.Require(t, "gzip")
	cmd := exec.Command("gzip", "-9", "-c")
	cmd.Stdin = io.LimitReader(zeros{}, n)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
