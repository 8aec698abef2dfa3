package sources_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
	"golang.org/x/sys/unix"
)

// writeTemp writes size random bytes to a new file in a temporary directory
// and returns its path and contents.
// moveToShm moves the file at path to tmpfs (/dev/shm), removed at the
// end of the test, and returns its new path.
func moveToShm(t testing.TB, path string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "nbdloop-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	shm := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(shm, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return shm
}

func writeTemp(t testing.TB, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 5))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// skipIfNoDirectIO skips the test when the temporary directory's
// filesystem refuses O_DIRECT.
func skipIfNoDirectIO(t *testing.T) {
	t.Helper()
	path, _ := writeTemp(t, 4096)
	f, err := sources.OpenFile(path, sources.FileOptions{DirectIO: true})
	if errors.Is(err, sources.ErrDirectIO) {
		t.Skipf("skipping direct I/O: the filesystem of %s refuses O_DIRECT: %v", filepath.Dir(path), err)
	}
	if err != nil {
		t.Fatalf("OpenFile(%s, DirectIO) = %v", path, err)
	}
	f.Close()
}

func TestFileConformance(t *testing.T) {
	tests := []struct {
		name     string
		fileSize int
		opts     sources.FileOptions
		// noFallocate makes Zero write zeros, as on a filesystem
		// without fallocate.
		noFallocate bool
		inRAM       bool
		// sealed serves a memfd sealed against shrinking and growing,
		// as a memory: device's is.
		sealed bool
	}{
		{name: "whole", fileSize: 1 << 20},
		{name: "odd size", fileSize: 1<<20 + 100},
		{name: "one byte", fileSize: 1},
		{name: "read-only", fileSize: 1<<20 + 7, opts: sources.FileOptions{ReadOnly: true}},
		{name: "offset", fileSize: 1 << 20, opts: sources.FileOptions{Offset: 65536}},
		{name: "offset and size limit", fileSize: 1 << 20, opts: sources.FileOptions{Offset: 1000, SizeLimit: 300001}},
		{name: "size limit past the end", fileSize: 100000, opts: sources.FileOptions{SizeLimit: 1 << 30}},
		{name: "writing zeros", fileSize: 1<<20 + 100, opts: sources.FileOptions{Offset: 512}, noFallocate: true},
		{name: "direct", fileSize: 1 << 20, opts: sources.FileOptions{DirectIO: true}},
		{name: "direct read-only", fileSize: 1 << 20, opts: sources.FileOptions{DirectIO: true, ReadOnly: true}},
		{name: "direct unaligned window", fileSize: 1<<20 + 100, opts: sources.FileOptions{DirectIO: true, Offset: 1000, SizeLimit: 700001}},
		{name: "direct unaligned end", fileSize: 1<<20 + 512, opts: sources.FileOptions{DirectIO: true, Offset: 4096}},
		{name: "direct tiny", fileSize: 3000, opts: sources.FileOptions{DirectIO: true, Offset: 100}},
		{name: "direct writing zeros", fileSize: 1<<20 + 100, opts: sources.FileOptions{DirectIO: true, Offset: 512}, noFallocate: true},
		// Files on tmpfs are read and written with raw system calls.
		{name: "tmpfs", fileSize: 1 << 20, inRAM: true},
		{name: "tmpfs window", fileSize: 1<<20 + 100, opts: sources.FileOptions{Offset: 1000, SizeLimit: 700001}, inRAM: true},
		{name: "tmpfs read-only", fileSize: 1 << 20, opts: sources.FileOptions{ReadOnly: true}, inRAM: true},
		{name: "sealed memfd", fileSize: 1<<20 + 100, sealed: true},
		{name: "sealed memfd window", fileSize: 1<<20 + 100, opts: sources.FileOptions{Offset: 1000, SizeLimit: 700001}, sealed: true},
		{name: "sealed memfd writing zeros", fileSize: 1 << 20, opts: sources.FileOptions{Offset: 512}, noFallocate: true, sealed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.DirectIO {
				skipIfNoDirectIO(t)
			}
			_, data := writeTemp(t, tt.fileSize)
			end := int64(tt.fileSize)
			if tt.opts.SizeLimit > 0 {
				end = min(end, tt.opts.Offset+tt.opts.SizeLimit)
			}
			want := data[tt.opts.Offset:end]
			sourcetest.Run(t, func(t *testing.T) sources.Source {
				path, data := writeTemp(t, tt.fileSize)
				if tt.inRAM {
					path = moveToShm(t, path)
				}
				var f *sources.File
				var err error
				if tt.sealed {
					f, err = sources.NewFile(sealedMemfd(t, data), "memfd", tt.opts)
				} else {
					f, err = sources.OpenFile(path, tt.opts)
				}
				if err != nil {
					t.Fatalf("OpenFile(%+v) = %v", tt.opts, err)
				}
				if tt.inRAM && !f.Caps().InMemory {
					t.Fatalf("Caps() = %v, want inmemory for a file on tmpfs", f.Caps())
				}
				if tt.noFallocate {
					sources.DisableFallocate(f)
				}
				return f
			}, want)
		})
	}
}

// sealedMemfd returns a memfd holding data, sealed against shrinking and
// growing as a memory: device's is.
func sealedMemfd(t testing.TB, data []byte) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	mf := os.NewFile(uintptr(fd), "memfd")
	if _, err := mf.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(mf.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		t.Fatal(err)
	}
	return mf
}

// TestFileWindowKeepsOutside checks that nothing a windowed File does
// reaches the bytes of the file outside the window, with direct I/O too,
// where requests are bounced through whole blocks.
func TestFileWindowKeepsOutside(t *testing.T) {
	tests := []struct {
		name     string
		fileSize int
		opts     sources.FileOptions
	}{
		{name: "buffered", fileSize: 1 << 20, opts: sources.FileOptions{Offset: 1000, SizeLimit: 500001}},
		{name: "direct", fileSize: 1 << 20, opts: sources.FileOptions{Offset: 1000, SizeLimit: 500001, DirectIO: true}},
		{name: "direct aligned", fileSize: 1 << 20, opts: sources.FileOptions{Offset: 8192, SizeLimit: 65536, DirectIO: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.DirectIO {
				skipIfNoDirectIO(t)
			}
			path, data := writeTemp(t, tt.fileSize)
			f, err := sources.OpenFile(path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			size := f.Size()
			ops := []struct {
				name string
				fn   func() error
			}{
				{"write all", func() error { _, err := f.WriteAt(bytes.Repeat([]byte{1}, int(size)), 0); return err }},
				{"write unaligned edges", func() error {
					if _, err := f.WriteAt([]byte{2, 2, 2}, 0); err != nil {
						return err
					}
					_, err := f.WriteAt([]byte{3, 3, 3}, size-3)
					return err
				}},
				{"zero all", func() error { return f.Zero(0, size, false) }},
				{"zero all, may trim", func() error { return f.Zero(0, size, true) }},
				{"trim all", func() error { return f.Trim(0, size) }},
			}
			for _, op := range ops {
				if err := op.fn(); err != nil {
					t.Fatalf("%s: %v", op.name, err)
				}
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(data) {
				t.Fatalf("file size = %d, want %d", len(got), len(data))
			}
			lo, hi := tt.opts.Offset, tt.opts.Offset+size
			if i := firstDiff(got[:lo], data[:lo]); i >= 0 {
				t.Errorf("byte %d before the window = %d, want %d", i, got[i], data[i])
			}
			if i := firstDiff(got[hi:], data[hi:]); i >= 0 {
				t.Errorf("byte %d after the window = %d, want %d", hi+int64(i), got[hi+int64(i)], data[hi+int64(i)])
			}
		})
	}
}

func TestOpenFileWindow(t *testing.T) {
	const fileSize = 10000
	tests := []struct {
		name              string
		offset, sizeLimit int64
		wantSize          int64
		wantErr           error
	}{
		{name: "whole", wantSize: fileSize},
		{name: "offset", offset: 1000, wantSize: fileSize - 1000},
		{name: "unaligned offset", offset: 3, wantSize: fileSize - 3},
		{name: "size limit", sizeLimit: 512, wantSize: 512},
		{name: "offset and size limit", offset: 9000, sizeLimit: 999, wantSize: 999},
		{name: "size limit past the end", offset: 9000, sizeLimit: 2000, wantSize: 1000},
		{name: "last byte", offset: fileSize - 1, wantSize: 1},
		{name: "offset at the end", offset: fileSize, wantErr: sources.ErrEmpty},
		{name: "offset past the end", offset: fileSize + 1, wantErr: sources.ErrEmpty},
		{name: "negative offset", offset: -1, wantErr: syscall.EINVAL},
		{name: "negative size limit", sizeLimit: -1, wantErr: syscall.EINVAL},
	}
	path, _ := writeTemp(t, fileSize)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := sources.OpenFile(path, sources.FileOptions{Offset: tt.offset, SizeLimit: tt.sizeLimit})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("OpenFile(offset=%d, sizelimit=%d) = %v, want %v", tt.offset, tt.sizeLimit, err, tt.wantErr)
				}
				checkPathError(t, err, path)
				return
			}
			if err != nil {
				t.Fatalf("OpenFile(offset=%d, sizelimit=%d) = %v, want nil", tt.offset, tt.sizeLimit, err)
			}
			defer f.Close()
			if got := f.Size(); got != tt.wantSize {
				t.Errorf("Size() = %d, want %d", got, tt.wantSize)
			}
		})
	}
}

// checkPathError checks that err is an *fs.PathError naming path once.
func checkPathError(t *testing.T, err error, path string) {
	t.Helper()
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != path {
		t.Errorf("error %q (%T) is not an *fs.PathError for %s", err, err, path)
	}
	if n := strings.Count(err.Error(), path); n != 1 {
		t.Errorf("error %q names the path %d times, want 1", err, n)
	}
}

func TestOpenFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.img")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		opts    sources.FileOptions
		wantErr error
	}{
		{name: "missing", path: filepath.Join(dir, "missing.img"), wantErr: fs.ErrNotExist},
		{name: "empty", path: empty, wantErr: sources.ErrEmpty},
		{name: "empty read-only", path: empty, opts: sources.FileOptions{ReadOnly: true}, wantErr: sources.ErrEmpty},
		{name: "directory", path: dir, opts: sources.FileOptions{ReadOnly: true}, wantErr: syscall.EINVAL},
		{name: "directory writable", path: dir, wantErr: syscall.EISDIR},
		{name: "character device", path: "/dev/null", opts: sources.FileOptions{ReadOnly: true}, wantErr: syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := sources.OpenFile(tt.path, tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("OpenFile(%s, %+v) = %v, %v, want nil, %v", tt.path, tt.opts, f, err, tt.wantErr)
			}
			checkPathError(t, err, tt.path)
		})
	}
}

func TestFileCaps(t *testing.T) {
	path, _ := writeTemp(t, 1<<20)
	tests := []struct {
		name string
		opts sources.FileOptions
		want sources.Caps
	}{
		{name: "writable", want: sources.Caps{Flush: true, Zero: true, Parallel: true}},
		{name: "read-only", opts: sources.FileOptions{ReadOnly: true}, want: sources.Caps{ReadOnly: true, Parallel: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := sources.OpenFile(path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := f.Caps()
			// Trim and InMemory depend on the filesystem, Rotational on
			// the disk.
			got.Trim, got.Rotational, got.InMemory = false, false, false
			if got != tt.want {
				t.Errorf("Caps() = %v, want %v (ignoring trim, rotational and inmemory)", got, tt.want)
			}
			if tt.opts.ReadOnly && f.Caps().Trim {
				t.Errorf("Caps() = %v, want no trim when read-only", f.Caps())
			}
		})
	}
}

// TestFileInMemory: files on tmpfs and memfds are served inline by the
// server; a file on a disk file system is not.
func TestFileInMemory(t *testing.T) {
	memfd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	mf := os.NewFile(uintptr(memfd), "memfd")
	if err := mf.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	shm := filepath.Join("/dev/shm", fmt.Sprintf("nbdloop-test-%d", os.Getpid()))
	if err := os.WriteFile(shm, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(shm)
	disk := "/var/tmp"
	var st unix.Statfs_t
	if err := unix.Statfs(disk, &st); err != nil {
		t.Fatal(err)
	}
	diskFile, err := os.CreateTemp(disk, "nbdloop-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(diskFile.Name())
	diskFile.Write(make([]byte, 4096))
	diskFile.Close()

	open := func(path string) (*sources.File, error) { return sources.OpenFile(path, sources.FileOptions{}) }
	tests := []struct {
		name string
		open func() (*sources.File, error)
		want bool
	}{
		{"memfd", func() (*sources.File, error) { return sources.NewFile(mf, "memfd", sources.FileOptions{}) }, true},
		{"tmpfs", func() (*sources.File, error) { return open(shm) }, true},
		{"disk", func() (*sources.File, error) { return open(diskFile.Name()) }, st.Type == unix.TMPFS_MAGIC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := tt.open()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := f.Caps().InMemory; got != tt.want {
				t.Errorf("Caps().InMemory = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFileReadOnlyRefusesWrites(t *testing.T) {
	path, data := writeTemp(t, 8192)
	f, err := sources.OpenFile(path, sources.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ops := []struct {
		name string
		fn   func() error
	}{
		{"WriteAt", func() error { _, err := f.WriteAt([]byte{1}, 0); return err }},
		{"Trim", func() error { return f.Trim(0, 4096) }},
		{"Zero", func() error { return f.Zero(0, 4096, false) }},
		{"Zero mayTrim", func() error { return f.Zero(0, 4096, true) }},
	}
	for _, op := range ops {
		if err := op.fn(); !errors.Is(err, sources.ErrReadOnly) {
			t.Errorf("%s = %v, want ErrReadOnly", op.name, err)
		}
		var errno syscall.Errno
		if err := op.fn(); !errors.As(err, &errno) || errno != syscall.EPERM {
			t.Errorf("%s = %v, want an error carrying EPERM", op.name, err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("the file changed")
	}
}

func TestFileShrunk(t *testing.T) {
	tests := []struct {
		name string
		opts sources.FileOptions
	}{
		{name: "buffered"},
		{name: "direct", opts: sources.FileOptions{DirectIO: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.DirectIO {
				skipIfNoDirectIO(t)
			}
			path, _ := writeTemp(t, 1<<20)
			f, err := sources.OpenFile(path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := os.Truncate(path, 512<<10); err != nil {
				t.Fatal(err)
			}
			reads := []struct {
				name string
				off  int64
				n    int
			}{
				{name: "past the new end", off: 600 << 10, n: 4096},
				{name: "across the new end", off: 512<<10 - 100, n: 4096},
				{name: "unaligned across the new end", off: 512<<10 - 1000, n: 3333},
			}
			for _, r := range reads {
				n, err := f.ReadAt(make([]byte, r.n), r.off)
				var errno syscall.Errno
				if err == nil || n == r.n || !errors.Is(err, io.ErrUnexpectedEOF) || !errors.As(err, &errno) || errno != syscall.EIO {
					t.Errorf("%s: ReadAt(off=%d, len=%d) = %d, %v, want an EIO error wrapping io.ErrUnexpectedEOF", r.name, r.off, r.n, n, err)
				}
			}
			if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
				t.Errorf("ReadAt before the new end = %v, want nil", err)
			}
			if tt.opts.DirectIO {
				// An unaligned write reads the blocks at its edges first.
				const off, n = 600<<10 + 3, 100
				_, err := f.WriteAt(make([]byte, n), off)
				var errno syscall.Errno
				if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.As(err, &errno) || errno != syscall.EIO {
					t.Errorf("WriteAt(off=%d, len=%d) past the new end = %v, want an EIO error wrapping io.ErrUnexpectedEOF", off, n, err)
				}
			}
		})
	}
}

func BenchmarkFileRead4K(b *testing.B) {
	path, _ := writeTemp(b, 64<<20)
	f, err := sources.OpenFile(path, sources.FileOptions{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 4096)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		if _, err := f.ReadAt(p, off); err != nil {
			b.Fatal(err)
		}
		off = (off + 4096) % f.Size()
	}
}
