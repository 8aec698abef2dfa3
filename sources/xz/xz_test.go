package xz

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

type fixture struct {
	name   string
	file   []byte
	want   []byte
	blocks int // 0: don't check
	warn   string
}

func fixtures(t *testing.T) []fixture {
	a := imagetest.Data(3<<20+4096, 1)
	b := imagetest.Data(1<<20+512, 2)
	ax := imagetest.XZ(t, a, "-T2", "--block-size=1MiB")
	bx := imagetest.XZ(t, b, "-T1", "--block-size=256KiB")
	empty := imagetest.XZ(t, nil)
	return []fixture{
		{name: "xz -T2 --block-size=1MiB", file: ax, want: a, blocks: 4},
		{name: "xz -T1 --block-size=256KiB", file: bx, want: b, blocks: 5},
		{name: "xz -T1 single block", file: imagetest.XZ(t, a, "-T1"), want: a, blocks: 1},
		{name: "cat a.xz b.xz", file: imagetest.Cat(ax, bx), want: imagetest.Cat(a, b), blocks: 9},
		{name: "stream padding", file: imagetest.Cat(ax, make([]byte, 8), bx, make([]byte, 4)), want: imagetest.Cat(a, b), blocks: 9},
		{name: "empty stream first", file: imagetest.Cat(empty, bx), want: b, blocks: 5},
		{name: "check none", file: imagetest.XZ(t, b, "--check=none", "-T2", "--block-size=300KiB"), want: b},
		{name: "check crc32", file: imagetest.XZ(t, b, "--check=crc32", "-T2", "--block-size=300KiB"), want: b},
		{name: "check crc64", file: imagetest.XZ(t, b, "--check=crc64", "-T2", "--block-size=300KiB"), want: b},
		{name: "check sha256", file: imagetest.XZ(t, b, "--check=sha256", "-T2", "--block-size=300KiB"), want: b},
		{name: "xz -9e", file: imagetest.XZ(t, b, "-9e", "-T1", "--block-size=700KiB"), want: b, blocks: 2},
	}
}

func TestXZFixtures(t *testing.T) {
	for _, fx := range fixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			s := imagetest.Open(t, Open, fx.file, Options{})
			defer s.Close()
			if fx.blocks != 0 && len(s.Index().Blocks) != fx.blocks {
				t.Errorf("%d blocks, want %d", len(s.Index().Blocks), fx.blocks)
			}
			imagetest.CheckWarnings(t, s.Warnings(), fx.warn)
			imagetest.CheckReads(t, s, fx.want)
		})
	}
}

func TestXZConformance(t *testing.T) {
	data := imagetest.Data(2<<20, 4)
	file := imagetest.XZ(t, data, "-T2", "--block-size=512KiB")
	sourcetest.Run(t, func(t *testing.T) sources.Source { return imagetest.Open(t, Open, file, Options{}) }, data)
}

func TestXZConformanceSingleBlock(t *testing.T) {
	old := singleSpill
	singleSpill = 512 << 10
	defer func() { singleSpill = old }()
	data := imagetest.Data(1<<20+512<<10, 5)
	file := imagetest.XZ(t, data, "-T1")
	sourcetest.Run(t, func(t *testing.T) sources.Source {
		s := imagetest.Open(t, Open, file, Options{TempDir: t.TempDir()})
		imagetest.CheckWarnings(t, s.Warnings(), "single 1.5 MiB block")
		return s
	}, data)
}

// The single-block background decode serves reads from its temporary file
// and decodes the block once.
func TestXZSingleBlockSpill(t *testing.T) {
	old := singleSpill
	singleSpill = 1 << 20
	defer func() { singleSpill = old }()
	data := imagetest.Data(6<<20, 6)
	file := imagetest.XZ(t, data, "-T1")
	dir := t.TempDir()
	s := imagetest.Open(t, Open, file, Options{TempDir: dir})
	defer s.Close()
	for _, off := range []int64{5 << 20, 0, 3<<20 + 17, 6<<20 - 4096} {
		got := make([]byte, 4096)
		if _, err := s.ReadAt(got, off); err != nil || !bytes.Equal(got, data[off:off+4096]) {
			t.Fatalf("ReadAt(off=%d) = %v, or wrong bytes", off, err)
		}
	}
	if st := s.Stats(); st.Decodes != 1 {
		t.Errorf("Decodes = %d, want 1", st.Decodes)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("temporary directory holds %d files, want none (unlinked)", len(ents))
	}
}

func TestXZErrors(t *testing.T) {
	data := imagetest.Data(2<<20, 8)
	good := imagetest.XZ(t, data, "-T2", "--block-size=512KiB")
	ix, err := ReadIndex(bytes.NewReader(good), int64(len(good)), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	b1 := ix.Blocks[1]
	flip := func(at int64) []byte { return imagetest.Flip(good, int(at)) }
	tests := []struct {
		name     string
		file     []byte
		openErr  string // substring of Open's error
		readErr  string // substring of the error reading everything
		isFilter bool
	}{
		{name: "x86 BCJ filter", file: imagetest.XZ(t, data, "--x86", "--lzma2"), openErr: `filter chain ["x86 BCJ" "LZMA2"]`, isFilter: true},
		{name: "delta filter", file: imagetest.XZ(t, data, "--delta", "--lzma2"), openErr: "only LZMA2 alone", isFilter: true},
		{name: "truncated", file: good[:len(good)-4], openErr: "footer"},
		{name: "truncated odd", file: good[:len(good)-3], openErr: "not a multiple of 4"},
		{name: "not xz", file: bytes.Repeat([]byte{1}, 100), openErr: "not an xz file"},
		{name: "index CRC", file: flip(int64(len(good)) - 13), openErr: "index CRC32 mismatch"},
		{name: "footer CRC", file: flip(int64(len(good)) - 11), openErr: "stream footer CRC32"},
		{name: "header flags", file: flip(7), openErr: "stream header"},
		{name: "block header CRC", file: flip(b1.COff + 2), readErr: "block header CRC32 mismatch"},
		{name: "compressed data", file: flip(b1.COff + 200), readErr: "corrupt xz data"},
		{name: "check", file: flip(b1.COff + b1.Unpadded() - 1), readErr: "CRC64 check mismatch"},
		{name: "first block header", file: flip(12 + 2), openErr: "block header CRC32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(bytes.NewReader(tt.file), int64(len(tt.file)), Options{})
			if tt.openErr != "" {
				if err == nil {
					s.Close()
					t.Fatalf("Open = nil error, want %q", tt.openErr)
				}
				if !strings.Contains(err.Error(), tt.openErr) {
					t.Errorf("Open = %q, want it to contain %q", err, tt.openErr)
				}
				if errors.Is(err, ErrFilter) != tt.isFilter {
					t.Errorf("errors.Is(%v, ErrFilter) = %v, want %v", err, !tt.isFilter, tt.isFilter)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open = %v", err)
			}
			defer s.Close()
			got := make([]byte, s.Size())
			_, err = s.ReadAt(got, 0)
			if err == nil || !strings.Contains(err.Error(), tt.readErr) {
				t.Fatalf("ReadAt(whole) = %v, want an error containing %q", err, tt.readErr)
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Format != "xz" || !errors.Is(err, ErrCorrupt) {
				t.Errorf("ReadAt error %v is not an xz *CorruptError matching ErrCorrupt", err)
			}
			// Blocks before the damage still read.
			if _, err := s.ReadAt(got[:4096], 0); err != nil || !bytes.Equal(got[:4096], data[:4096]) {
				t.Errorf("ReadAt(block 0) = %v or wrong bytes", err)
			}
		})
	}
}

func TestXZWarnings(t *testing.T) {
	old := largeBlock
	largeBlock = 1 << 20
	defer func() { largeBlock = old }()
	data := imagetest.Data(3<<20, 3)
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{name: "small blocks", file: imagetest.XZ(t, data, "-T2", "--block-size=1MiB")},
		{name: "large blocks", file: imagetest.XZ(t, data, "-T2", "--block-size=1500KiB"), want: "xz blocks of up to 1.5 MiB: a random read can decode a whole block (for fast random access repack with smaller blocks: nbdloop pack IMAGE -o NEW.xz)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := imagetest.Open(t, Open, tt.file, Options{})
			defer s.Close()
			if got := strings.Join(s.Warnings(), "\n"); got != tt.want {
				t.Errorf("Warnings() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestXZReadOnly(t *testing.T) {
	s := imagetest.Open(t, Open, imagetest.XZ(t, imagetest.Data(4096, 1)), Options{})
	defer s.Close()
	_, err := s.WriteAt([]byte{1}, 0)
	if !errors.Is(err, sources.ErrReadOnly) || !strings.Contains(err.Error(), "-r, or add --filter cow") {
		t.Errorf("WriteAt = %v, want ErrReadOnly naming -r and --filter cow", err)
	}
}

// The index reader handles many streams and blocks without reading the
// data: offsets line up with what xz --list reports.
func TestXZIndexMatchesXZList(t *testing.T) {
	tooltest.Require(t, "xz")
	data := imagetest.Data(3<<20, 10)
	file := imagetest.Cat(imagetest.XZ(t, data, "-T2", "--block-size=700KiB"), make([]byte, 4), imagetest.XZ(t, data[:100000], "--check=sha256"))
	path := filepath.Join(t.TempDir(), "f.xz")
	os.WriteFile(path, file, 0o644)
	out, err := exec.Command("xz", "--robot", "--list", "-vv", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if f[0] == "block" {
			// block, stream, block, cstart, ustart, csize(total), usize
			want = append(want, fmt.Sprintf("%s@%s+%s", f[4], f[5], f[7]))
		}
	}
	ix, err := ReadIndex(bytes.NewReader(file), int64(len(file)), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, b := range ix.Blocks {
		got = append(got, fmt.Sprintf("%d@%d+%d", b.COff, b.UOff, ix.USize(i)))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("blocks = %v\nxz --list = %v", got, want)
	}
	if ix.Streams != 2 || ix.Padding != 4 {
		t.Errorf("Streams, Padding = %d, %d, want 2, 4", ix.Streams, ix.Padding)
	}
}

// With Sequential, a single large block is decoded as it is read, once,
// without a temporary file (what nbdloop pack asks for).
func TestXZSingleBlockSequential(t *testing.T) {
	old := singleSpill
	singleSpill = 512 << 10
	defer func() { singleSpill = old }()
	data := imagetest.Data(3<<20, 12)
	s := imagetest.Open(t, Open, imagetest.XZ(t, data, "-T1"), Options{Sequential: true, CacheSize: 3 << 20, TempDir: "/nonexistent"})
	defer s.Close()
	if len(s.Warnings()) != 0 {
		t.Errorf("Warnings() = %q, want none", s.Warnings())
	}
	buf := make([]byte, 256<<10)
	for off := int64(0); off < s.Size(); off += int64(len(buf)) {
		if _, err := s.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
			t.Fatalf("ReadAt(off=%d) = %v, or wrong bytes", off, err)
		}
	}
	if st := s.Stats(); st.Decodes != 1 || st.Peak > st.Budget {
		t.Errorf("Decodes = %d (want 1), Peak = %d (want <= %d)", st.Decodes, st.Peak, st.Budget)
	}
}
