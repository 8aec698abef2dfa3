package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// fixture builds an image in dir with qemu-img and returns its path and
// the backing files that writes must leave untouched.
type fixture struct {
	name  string
	build func(t testing.TB, dir string) (img string, backing []string)
}

const mib = 1 << 20

// converted makes a raw file of size bytes of testData and converts it to
// qcow2 with the given qemu-img convert arguments.
func converted(size int, seed uint64, args ...string) func(t testing.TB, dir string) (string, []string) {
	return func(t testing.TB, dir string) (string, []string) {
		raw := filepath.Join(dir, "src.raw")
		writeFile(t, raw, testData(size, seed))
		img := filepath.Join(dir, "img.qcow2")
		qemuImg(t, append(append([]string{"convert", "-O", "qcow2"}, args...), raw, img)...)
		os.Remove(raw)
		return img, nil
	}
}

// chain makes base.raw <- mid.qcow2 <- top.qcow2 with relative backing
// names, a base shorter than the top (reads past it are zeros), and
// qemu-io writes, zero writes and discards in each layer.
func chain(midOpts, topOpts string) func(t testing.TB, dir string) (string, []string) {
	return func(t testing.TB, dir string) (string, []string) {
		base := filepath.Join(dir, "base.raw")
		writeFile(t, base, testData(5*mib, 3))
		mid := filepath.Join(dir, "mid.qcow2")
		top := filepath.Join(dir, "top.qcow2")
		qemuImg(t, "create", "-q", "-f", "qcow2", "-o", midOpts, "-b", "base.raw", "-F", "raw", mid, "6M")
		qemuImg(t, "io", "-c", "write -P 0x11 100k 300k", "-c", "write -P 0x22 2M 64k", "-c", "write -P 0x33 4990k 20k", mid)
		if strings.Contains(midOpts, "compat=1.1") {
			qemuImg(t, "io", "-c", "write -z 1M 128k", "-c", "discard 3M 256k", mid)
		}
		qemuImg(t, "create", "-q", "-f", "qcow2", "-o", topOpts, "-b", "mid.qcow2", "-F", "qcow2", top, "8M")
		qemuImg(t, "io", "-c", "write -P 0x44 150k 10k", "-c", "write -P 0x55 2040k 100k", "-c", "write -P 0x66 7M 3k", top)
		if strings.Contains(topOpts, "compat=1.1") {
			qemuImg(t, "io", "-c", "write -z 2100k 64k", "-c", "write -z 4M 8k", top)
		}
		return top, []string{base, mid}
	}
}

var fixtures = []fixture{
	{"v3-64k", converted(6*mib, 1, "-o", "compat=1.1,cluster_size=64k")},
	{"v2-64k", converted(6*mib, 2, "-o", "compat=0.10,cluster_size=64k")},
	{"v3-4k-refcount1", converted(3*mib, 3, "-o", "compat=1.1,cluster_size=4k,refcount_bits=1")},
	{"v3-2M-refcount64", converted(9*mib+4096, 4, "-o", "compat=1.1,cluster_size=2M,refcount_bits=64")},
	{"v3-512-refcount64", converted(1*mib, 5, "-o", "compat=1.1,cluster_size=512,refcount_bits=64")},
	{"v3-64k-refcount8", converted(2*mib, 6, "-o", "compat=1.1,refcount_bits=8")},
	{"zlib", converted(4*mib, 7, "-c", "-o", "compat=1.1")},
	{"zlib-v2-4k", converted(2*mib, 8, "-c", "-o", "compat=0.10,cluster_size=4k")},
	{"zstd", converted(4*mib, 9, "-c", "-o", "compat=1.1,compression_type=zstd")},
	{"zstd-2M", converted(5*mib, 10, "-c", "-o", "compat=1.1,compression_type=zstd,cluster_size=2M")},
	{"chain-v3", chain("compat=1.1,cluster_size=64k", "compat=1.1,cluster_size=64k")},
	{"chain-v2", chain("compat=0.10,cluster_size=4k", "compat=0.10,cluster_size=64k")},
	{"chain-extl2", chain("compat=1.1,cluster_size=64k", "compat=1.1,cluster_size=64k,extended_l2=on")},
	{"extl2-128k", chain("compat=1.1,extended_l2=on,cluster_size=128k", "compat=1.1,extended_l2=on,cluster_size=32k")},
	{"lazy-refcounts", chain("compat=1.1,lazy_refcounts=on", "compat=1.1,lazy_refcounts=on,refcount_bits=4")},
}

// TestReadMatchesQemuImg: every byte served equals qemu-img convert -O raw,
// read sequentially in 1 MiB requests and at random offsets and lengths.
func TestReadMatchesQemuImg(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			t.Parallel()
			img, _ := fx.build(t, t.TempDir())
			want := toRaw(t, img)
			im, err := Open(img, Options{ReadOnly: true, CacheSize: 256 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if im.Size() != int64(len(want)) {
				t.Fatalf("Size() = %d, want %d", im.Size(), len(want))
			}
			got := make([]byte, len(want))
			for off := 0; off < len(got); off += mib {
				if _, err := im.ReadAt(got[off:min(off+mib, len(got))], int64(off)); err != nil {
					t.Fatalf("ReadAt(off=%d): %v", off, err)
				}
			}
			if d := firstDiff(got, want); d >= 0 {
				t.Fatalf("sequential read differs from qemu-img at byte %d", d)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for range 300 {
				n := 1 + rng.IntN(200<<10)
				off := rng.IntN(len(want) - n + 1)
				p := make([]byte, n)
				if _, err := im.ReadAt(p, int64(off)); err != nil {
					t.Fatalf("ReadAt(off=%d, len=%d): %v", off, n, err)
				}
				if d := firstDiff(p, want[off:off+n]); d >= 0 {
					t.Fatalf("ReadAt(off=%d, len=%d) differs from qemu-img at byte %d", off, n, off+d)
				}
			}
		})
	}
}

// TestWriteMatchesQemuImg: random writes, zeros and trims (partial
// clusters, cluster-aligned runs, some from several goroutines at once)
// through the source, mirrored into a reference; then qemu-img check finds
// no error and no leak, qemu-img compare finds the image equal to the
// reference, and the backing files are unchanged.
func TestWriteMatchesQemuImg(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img, backing := fx.build(t, dir)
			sums := map[string]string{}
			for _, b := range backing {
				sums[b] = sha(t, b)
			}
			ref := toRaw(t, img)
			im, err := Open(img, Options{CacheSize: 64 << 10}) // small: evictions and metadata flushes happen
			if err != nil {
				t.Fatal(err)
			}
			if im.Caps().ReadOnly || !im.Caps().Parallel {
				t.Fatalf("Caps() = %v, want writable and parallel", im.Caps())
			}
			cs := int(im.ClusterSize())
			rng := rand.New(rand.NewPCG(7, uint64(len(fx.name))))
			ops := 150
			if cs >= 1<<20 {
				ops = 50 // every partial write moves 2 MiB: keep the race run short
			}
			mutate(t, im, ref, rng, 0, len(ref), cs, ops)

			// Several goroutines, each in its own quarter.
			var wg sync.WaitGroup
			q := len(ref) / 4 &^ 511
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(g), 99))
					mutate(t, im, ref, r, g*q, q, cs, ops*2/5)
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			if err := im.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			checkImage(t, img, ref)
			for b, s := range sums {
				if sha(t, b) != s {
					t.Errorf("backing file %s changed", filepath.Base(b))
				}
			}
		})
	}
}

// mutate makes n random modifications within [lo, lo+size) of im and of
// ref, checking reads along the way.
func mutate(t *testing.T, im *Image, ref []byte, rng *rand.Rand, lo, size, cs int, n int) {
	for range n {
		var ln int
		switch rng.IntN(4) {
		case 0:
			ln = 1 + rng.IntN(4096)
		case 1:
			ln = cs * (1 + rng.IntN(3))
		case 2:
			ln = 1 + rng.IntN(3*cs)
		default:
			ln = 512 * (1 + rng.IntN(64))
		}
		ln = min(ln, size)
		off := lo + rng.IntN(size-ln+1)
		if rng.IntN(3) == 0 {
			off = lo + (off-lo)/cs*cs
			ln = min(ln, lo+size-off)
		}
		switch op := rng.IntN(10); {
		case op < 6:
			p := make([]byte, ln)
			for i := range p {
				p[i] = byte(rng.Uint32()) | 1
			}
			if _, err := im.WriteAt(p, int64(off)); err != nil {
				t.Errorf("WriteAt(off=%d, len=%d): %v", off, ln, err)
				return
			}
			copy(ref[off:], p)
		case op < 8:
			if err := im.Zero(int64(off), int64(ln), rng.IntN(2) == 0); err != nil {
				t.Errorf("Zero(off=%d, len=%d): %v", off, ln, err)
				return
			}
			clear(ref[off : off+ln])
		case op < 9:
			if err := im.Trim(int64(off), int64(ln)); err != nil {
				t.Errorf("Trim(off=%d, len=%d): %v", off, ln, err)
				return
			}
			// Trimmed bytes read back as before or as zeros.
			p := make([]byte, ln)
			if _, err := im.ReadAt(p, int64(off)); err != nil {
				t.Errorf("ReadAt after Trim: %v", err)
				return
			}
			for i := range p {
				if p[i] != ref[off+i] && p[i] != 0 {
					t.Errorf("byte %d after Trim(off=%d, len=%d) = %#x, want %#x or 0", off+i, off, ln, p[i], ref[off+i])
					return
				}
			}
			copy(ref[off:], p)
		default:
			if err := im.Flush(); err != nil {
				t.Errorf("Flush: %v", err)
				return
			}
		}
		// Read back a window around the change.
		a := max(lo, off-cs)
		b := min(lo+size, off+ln+cs)
		p := make([]byte, b-a)
		if _, err := im.ReadAt(p, int64(a)); err != nil {
			t.Errorf("ReadAt(off=%d, len=%d): %v", a, b-a, err)
			return
		}
		if d := firstDiff(p, ref[a:b]); d >= 0 {
			t.Errorf("after a change at %d+%d, byte %d reads %#x, want %#x", off, ln, a+d, p[d], ref[a+d])
			return
		}
	}
}

// checkImage runs qemu-img check (no errors, no leaks) and compare against
// ref, and reads the image back through Open.
func checkImage(t *testing.T, img string, ref []byte) {
	t.Helper()
	out, code := qemuImgCode(t, "check", img)
	if code != 0 || !strings.Contains(out, "No errors were found") || strings.Contains(out, "leaked") {
		t.Errorf("qemu-img check: exit %d\n%s", code, out)
	}
	refPath := filepath.Join(t.TempDir(), "ref.raw")
	writeFile(t, refPath, ref)
	if out, code := qemuImgCode(t, "compare", "-f", "qcow2", "-F", "raw", img, refPath); code != 0 {
		t.Errorf("qemu-img compare: exit %d\n%s", code, out)
	}
	im, err := Open(img, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	got := make([]byte, len(ref))
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if d := firstDiff(got, ref); d >= 0 {
		t.Errorf("reopened image differs from the reference at byte %d", d)
	}
}

// TestWriteGrowsRefcountTable: 512-byte clusters with 64-bit refcounts
// cover 32 KiB per refcount block and 2 MiB per refcount table cluster,
// so filling 12 MiB needs new refcount blocks and a larger, moved table.
func TestWriteGrowsRefcountTable(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "grow.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64", img, "12M")
	before := readHeader(t, img)
	im, err := Open(img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ref := make([]byte, 12*mib)
	rng := rand.New(rand.NewPCG(5, 5))
	for off := 0; off < len(ref); off += 64 << 10 {
		p := ref[off : off+64<<10]
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if _, err := im.WriteAt(p, int64(off)); err != nil {
			t.Fatalf("WriteAt(off=%d): %v", off, err)
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	after := readHeader(t, img)
	if after.refTableClusters <= before.refTableClusters {
		t.Errorf("refcount table has %d clusters, want more than %d", after.refTableClusters, before.refTableClusters)
	}
	checkImage(t, img, ref)
}

// TestOverwriteCompressedFreesIt: rewriting every cluster of a compressed
// image frees the compressed clusters (check finds no leak) and later
// writes reuse the space instead of growing the file without bound.
func TestOverwriteCompressedFreesIt(t *testing.T) {
	dir := t.TempDir()
	img, _ := converted(2*mib, 12, "-c", "-o", "compat=1.1,cluster_size=64k")(t, dir)
	ref := toRaw(t, img)
	for round := range 3 {
		im, err := Open(img, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range ref {
			ref[i] = byte(i*7 + round)
		}
		if _, err := im.WriteAt(ref, 0); err != nil {
			t.Fatal(err)
		}
		if err := im.Zero(0, mib, true); err != nil {
			t.Fatal(err)
		}
		clear(ref[:mib])
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		checkImage(t, img, ref)
	}
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 4*mib {
		t.Errorf("image grew to %d bytes for 2 MiB of data rewritten 3 times: freed clusters are not reused", fi.Size())
	}
}

type hdrFields struct{ refTableClusters uint32 }

func readHeader(t *testing.T, img string) hdrFields {
	b := readFile(t, img)
	return hdrFields{refTableClusters: binary.BigEndian.Uint32(b[56:])}
}

// setIncompatible sets bits in the incompatible features field.
func setIncompatible(t *testing.T, img string, bits uint64) {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	f.ReadAt(b[:], offIncompatible)
	binary.BigEndian.PutUint64(b[:], binary.BigEndian.Uint64(b[:])|bits)
	if _, err := f.WriteAt(b[:], offIncompatible); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefuses: images that cannot be served, or not read-write, fail
// with errors that say why and what to do; read-only they open where the
// feature allows it.
func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name     string
		build    func(t *testing.T, dir string) string
		rwErr    string // "" : opens read-write
		roErr    string // "" : opens read-only
		unsupp   bool   // errors wrap ErrUnsupported
		warnings string
	}{
		{name: "dirty", build: func(t *testing.T, dir string) string {
			img := filepath.Join(dir, "d.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "1M")
			setIncompatible(t, img, incDirty)
			return img
		}, rwErr: "qemu-img check -r all"},
		{name: "corrupt", build: func(t *testing.T, dir string) string {
			img := filepath.Join(dir, "c.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", img, "1M")
			setIncompatible(t, img, incCorrupt)
			return img
		}, rwErr: "qemu-img check -r all"},
		{name: "unknown-incompatible", build: func(t *testing.T, dir string) string {
			img := filepath.Join(dir, "u.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", img, "1M")
			setIncompatible(t, img, 1<<40)
			return img
		}, rwErr: "bit 40", roErr: "bit 40", unsupp: true},
		{name: "encrypted", build: func(t *testing.T, dir string) string {
			img := filepath.Join(dir, "e.qcow2")
			qemuImgLUKS(t, img)
			return img
		}, rwErr: "encrypted", roErr: "encrypted", unsupp: true},
		{name: "external-data", build: func(t *testing.T, dir string) string {
			img := filepath.Join(dir, "x.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "x.raw"), img, "1M")
			return img
		}, rwErr: "external data file", roErr: "external data file", unsupp: true},
		{name: "snapshots", build: func(t *testing.T, dir string) string {
			img := filepath.Join(dir, "s.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", img, "1M")
			qemuImg(t, "snapshot", "-c", "s1", img)
			return img
		}, warnings: "read-only"},
		{name: "backing-loop", build: func(t *testing.T, dir string) string {
			a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", a, "1M")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b)
			qemuImg(t, "rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a)
			return a
		}, rwErr: "loops", roErr: "loops"},
		{name: "missing-backing", build: func(t *testing.T, dir string) string {
			a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", a, "1M")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b)
			os.Remove(a)
			return b
		}, rwErr: "backing file", roErr: "backing file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := tt.build(t, t.TempDir())
			for _, ro := range []bool{false, true} {
				want := tt.rwErr
				if ro {
					want = tt.roErr
				}
				im, err := Open(img, Options{ReadOnly: ro})
				if want == "" {
					if err != nil {
						t.Fatalf("Open(ReadOnly=%v) = %v, want success", ro, err)
					}
					w := strings.Join(im.Warnings(), "\n")
					if tt.warnings != "" && !ro && !strings.Contains(w, tt.warnings) {
						t.Errorf("Warnings() = %q, want one about %q", w, tt.warnings)
					}
					if tt.warnings != "" && !im.Caps().ReadOnly {
						t.Errorf("Caps() = %v, want read-only", im.Caps())
					}
					if tt.warnings != "" {
						if _, err := im.WriteAt([]byte{1}, 0); !errors.Is(err, sources.ErrReadOnly) {
							t.Errorf("WriteAt = %v, want ErrReadOnly", err)
						}
					}
					im.Close()
					continue
				}
				if err == nil {
					im.Close()
					t.Fatalf("Open(ReadOnly=%v) succeeded, want an error about %q", ro, want)
				}
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Open(ReadOnly=%v) = %q, want it to mention %q", ro, err, want)
				}
				if tt.unsupp && !errors.Is(err, ErrUnsupported) {
					t.Errorf("Open(ReadOnly=%v) = %v, want it to wrap ErrUnsupported", ro, err)
				}
			}
		})
	}
}

// TestOpenErrorsAreOSErrors: failures to open the file are returned as
// the os errors they are (attach words them): a missing file, a
// directory, and a file without write permission opened for writing
// (checked when not root, who writes through permissions), which opens
// read-only.
func TestOpenErrorsAreOSErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.qcow2"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want os.ErrNotExist", err)
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Errorf("Open(directory) succeeded")
	}
	if os.Geteuid() == 0 {
		return
	}
	img, _ := converted(mib, 1)(t, dir)
	os.Chmod(img, 0o444)
	if _, err := Open(img, Options{}); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("Open = %v, want a permission error", err)
	}
	im, err := Open(img, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
}

// TestConformance runs the sourcetest suite on a three-level chain, on a
// compressed image and read-only.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		fx   fixture
		ro   bool
	}{
		{"chain", fixtures[10], false},
		{"zstd", fixtures[8], false},
		{"extl2", fixtures[13], false},
		{"chain-ro", fixtures[10], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master := t.TempDir()
			img, _ := tc.fx.build(t, master)
			want := toRaw(t, img)
			sourcetest.Run(t, func(t *testing.T) sources.Source {
				dir := t.TempDir()
				ents, _ := os.ReadDir(master)
				for _, e := range ents {
					copyFile(t, filepath.Join(master, e.Name()), filepath.Join(dir, e.Name()))
				}
				im, err := Open(filepath.Join(dir, filepath.Base(img)), Options{ReadOnly: tc.ro})
				if err != nil {
					t.Fatal(err)
				}
				return im
			}, want)
		})
	}
}

// TestZeroKeepsAllocation: Zero without mayTrim keeps the host cluster
// (v3 zero flag with an offset), with mayTrim it is freed; both read as
// zeros and check clean.
func TestZeroKeepsAllocation(t *testing.T) {
	img, _ := converted(mib, 4, "-o", "compat=1.1,cluster_size=64k")(t, t.TempDir())
	ref := toRaw(t, img)
	im, err := Open(img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Zero(0, 128<<10, false); err != nil {
		t.Fatal(err)
	}
	if err := im.Zero(128<<10, 128<<10, true); err != nil {
		t.Fatal(err)
	}
	clear(ref[:256<<10])
	for ci, wantHost := range []bool{true, true, false, false} {
		e, _, err := im.lookup(int64(ci))
		if err != nil {
			t.Fatal(err)
		}
		if e&entryZero == 0 || (e&offsetMask != 0) != wantHost {
			t.Errorf("cluster %d: L2 entry %#x, want zero flag and host offset %v", ci, e, wantHost)
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	checkImage(t, img, ref)
}

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "qcow2example")
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "disk.qcow2")
	if out, err := runQemuImg("create", "-q", "-f", "qcow2", img, "1M"); err != nil {
		fmt.Println(out, err)
		return
	}
	im, err := Open(img, Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	im.WriteAt([]byte("hello"), 4096)
	p := make([]byte, 5)
	im.ReadAt(p, 4096)
	fmt.Println(im.Size(), string(p), bytes.Equal(p, []byte("hello")))
	im.Close()
	// Output: 1048576 hello true
}

// TestUnflushedStateIsConsistent: at any point between calls, without a
// Flush, the file as it stands (what a crash would leave, if the disk kept
// the write order) passes qemu-img check with at most leaked clusters:
// no reference to a cluster whose refcount is 0 or that holds unwritten
// data, and refcounts written before the references that need them.
func TestUnflushedStateIsConsistent(t *testing.T) {
	for _, fx := range []fixture{fixtures[10], fixtures[6], fixtures[4]} {
		t.Run(fx.name, func(t *testing.T) {
			dir := t.TempDir()
			img, _ := fx.build(t, dir)
			ref := toRaw(t, img)
			im, err := Open(img, Options{CacheSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			rng := rand.New(rand.NewPCG(3, 3))
			snap := filepath.Join(dir, "crash.qcow2")
			for i := range 25 {
				mutate(t, im, ref, rng, 0, len(ref), int(im.ClusterSize()), 2)
				copyFile(t, img, snap)
				// 0: clean; 3: leaked clusters only (exit 2 is corruption).
				if out, code := qemuImgCode(t, "check", snap); code != 0 && code != 3 {
					t.Fatalf("after %d changes, qemu-img check of the unflushed file: exit %d\n%s", 2*(i+1), code, out)
				}
			}
		})
	}
}

// TestConcurrentAllocatingWrites: like fio's sequential 1 MiB writes at
// queue depth 8, writers take the next 1 MiB of an empty image in turn,
// while others write the same bytes again (whole clusters and partial
// ones, which then race for the same clusters), readers check that every
// byte reads as zero or as written, and flushes run. Every byte's value
// depends on its offset only, so the result is known: qemu-img check must
// find no leak (each cluster that lost a race is freed), compare no
// difference.
func TestConcurrentAllocatingWrites(t *testing.T) {
	for _, opts := range []string{
		"compat=1.1,cluster_size=64k",
		"compat=0.10,cluster_size=4k",
		"compat=1.1,cluster_size=4k,refcount_bits=1",
		"compat=1.1,cluster_size=512,refcount_bits=64",
		"compat=1.1,cluster_size=128k,extended_l2=on",
	} {
		t.Run(opts, func(t *testing.T) {
			t.Parallel()
			const size = 24 * mib
			img := filepath.Join(t.TempDir(), "img.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", opts, img, fmt.Sprint(size))
			im, err := Open(img, Options{CacheSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			ref := make([]byte, size)
			for i := range ref {
				ref[i] = byte(i*131+i>>11) | 1
			}
			var next atomic.Int64
			var stop atomic.Bool
			var wg, others sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1) - 1)
						if i >= size/mib {
							return
						}
						if _, err := im.WriteAt(ref[i*mib:(i+1)*mib], int64(i*mib)); err != nil {
							t.Errorf("WriteAt(%d MiB): %v", i, err)
							return
						}
					}
				}()
			}
			for g := range 4 {
				others.Add(1)
				go func() {
					defer others.Done()
					rng := rand.New(rand.NewPCG(uint64(g), 17))
					p := make([]byte, 2*mib)
					for n := 0; !stop.Load(); n++ {
						at := int(next.Load()) * mib // near the sequential writers
						off := max(0, min(size-2*mib, at-mib+rng.IntN(2*mib)))
						ln := 1 + rng.IntN(2*mib)
						if g == 0 && n%16 == 0 {
							if err := im.Flush(); err != nil {
								t.Errorf("Flush: %v", err)
								return
							}
						}
						if g%2 == 0 {
							if rng.IntN(2) == 0 {
								off &^= 64<<10 - 1
							}
							if _, err := im.WriteAt(ref[off:off+ln], int64(off)); err != nil {
								t.Errorf("WriteAt(off=%d, len=%d): %v", off, ln, err)
								return
							}
							continue
						}
						if _, err := im.ReadAt(p[:ln], int64(off)); err != nil {
							t.Errorf("ReadAt(off=%d, len=%d): %v", off, ln, err)
							return
						}
						for i, b := range p[:ln] {
							if b != 0 && b != ref[off+i] {
								t.Errorf("byte %d reads %#x, want 0 or %#x", off+i, b, ref[off+i])
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			stop.Store(true)
			others.Wait()
			if t.Failed() {
				return
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			checkImage(t, img, ref)
		})
	}
}
