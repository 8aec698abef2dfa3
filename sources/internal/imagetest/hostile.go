package imagetest

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// Outside makes a directory beside the test's image directory, holding a
// canary file that hostile images name (by absolute path, by "..", through
// symbolic links), and watches it: Opened reports every file in it that
// was opened, read or written, and Check fails the test if the canary was
// touched at all. Images live in Dir.
type Outside struct {
	Dir    string // where the test writes its images
	Out    string // the directory outside Dir
	Canary string // a file in Out, 1 MiB of 0xCA
	fd     int
	mu     sync.Mutex
}

// NewOutside makes the two directories and starts watching Out.
func NewOutside(t testing.TB) *Outside {
	t.Helper()
	top := t.TempDir()
	o := &Outside{Dir: filepath.Join(top, "images"), Out: filepath.Join(top, "outside")}
	o.Canary = filepath.Join(o.Out, "canary")
	for _, d := range []string{o.Dir, o.Out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(o.Canary, bytes.Repeat([]byte{0xCA}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, o.Out, unix.IN_OPEN|unix.IN_ACCESS|unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	o.fd = fd
	t.Cleanup(func() { unix.Close(fd) })
	return o
}

// Opened returns the names of the files in Out opened, read or written
// since the last call.
func (o *Outside) Opened() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var names []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(o.fd, buf)
		if n <= 0 || err != nil {
			return names
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				name = string(bytes.TrimRight(raw, "\x00"))
			}
			names = append(names, name)
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// Check fails the test if anything in Out was opened since the last call to
// Opened or Check, or if the canary's bytes changed.
func (o *Outside) Check(t testing.TB, what string) {
	t.Helper()
	if names := o.Opened(); len(names) > 0 {
		t.Errorf("%s: files outside the image's directory were opened: %q", what, names)
	}
	b, err := os.ReadFile(o.Canary)
	if err != nil {
		t.Fatal(err)
	}
	o.Opened() // our own read
	if !bytes.Equal(b, bytes.Repeat([]byte{0xCA}, 1<<20)) {
		t.Errorf("%s: the canary file outside the image's directory was changed", what)
	}
}

// AllocBound is the bound that Allocated's figure is held to for a budget
// of n bytes: n itself, or raceFactor times n when the race detector
// inflates allocations (go test -race, as make check runs the tests).
func AllocBound(n int64) uint64 { return uint64(n) * raceFactor }

// Allocated runs f and returns the bytes the Go heap allocated meanwhile,
// an upper bound of the memory f held at its peak (other goroutines'
// allocations count too, so keep the test quiet while it runs).
func Allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// OpenReadAll opens the file at path with open (a format's Open, from a
// ReaderAt and a size), reads the whole source and closes it, and returns
// what it read, the first error, and the bytes allocated meanwhile
// (Allocated).
func OpenReadAll[S sources.Source, O any](t testing.TB, path string, open func(io.ReaderAt, int64, O) (S, error), opts O) (got []byte, alloc uint64, err error) {
	t.Helper()
	alloc = Allocated(func() {
		f, e := os.Open(path)
		if e != nil {
			t.Fatal(e)
		}
		fi, e := f.Stat()
		if e != nil {
			f.Close()
			t.Fatal(e)
		}
		s, e := open(f, fi.Size(), opts)
		if err = e; e != nil {
			f.Close()
			return
		}
		defer s.Close()
		got = make([]byte, s.Size())
		if _, e := s.ReadAt(got, 0); e != nil {
			err = e
		}
	})
	return got, alloc, err
}
