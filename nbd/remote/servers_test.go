package remote

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/nbdtest"
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// fileServers start a server no one here wrote, serving the file given.
var fileServers = []struct {
	name  string
	start func(t testing.TB, file string) *nbdtest.Server
}{
	{"nbdkit", func(t testing.TB, file string) *nbdtest.Server { return nbdtest.Nbdkit(t, "file", file) }},
	{"qemu-nbd", nbdtest.QemuNBD},
	{"nbd-server", nbdtest.NBDServer},
}

// randomFile writes size random bytes to a new file and returns its path
// and contents.
func randomFile(t testing.TB, size int) (string, []byte) {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, b
}

func openURI(t *testing.T, uri string, opts Options) *Source {
	t.Helper()
	u, err := nbd.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	return openFast(t, u, opts)
}

// TestConformanceServers runs the Source contract's checks against each
// server: nbdkit's memory plugin, and a file through each file server.
func TestConformanceServers(t *testing.T) {
	t.Run("nbdkit memory", func(t *testing.T) {
		sourcetest.RunSparse(t, func(t *testing.T) sources.Source {
			return openURI(t, nbdtest.Nbdkit(t, "memory", "64M").URI, Options{})
		}, 64<<20, sourcetest.Zeros{})
	})
	for _, fs := range fileServers {
		t.Run(fs.name, func(t *testing.T) {
			_, want := randomFile(t, 4<<20)
			sourcetest.Run(t, func(t *testing.T) sources.Source {
				path, _ := randomFile(t, 4<<20)
				return openURI(t, fs.start(t, path).URI, Options{})
			}, want)
		})
	}
}

// TestServersWriteAndRestart writes through the Source, kills the server
// and starts it again between requests, and checks that the Source
// carries on and that the file holds what was written.
func TestServersWriteAndRestart(t *testing.T) {
	for _, fs := range fileServers {
		t.Run(fs.name, func(t *testing.T) {
			path, want := randomFile(t, 8<<20)
			srv := fs.start(t, path)
			var log logLines
			s := openURI(t, srv.URI, Options{Logf: log.logf})
			defer s.Close()
			r := rand.New(rand.NewPCG(1, 2))
			// step writes, sometimes zeroes, and reads back.
			step := func(i int) error {
				n := 512 * (1 + r.IntN(256))
				off := int64(512 * r.IntN((len(want)-n)/512))
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(i + j)
				}
				if _, err := s.WriteAt(p, off); err != nil {
					return fmt.Errorf("step %d: write: %w", i, err)
				}
				copy(want[off:], p)
				if i%3 == 0 {
					if err := s.Zero(off, 4096, i%2 == 0); err != nil {
						return fmt.Errorf("step %d: zero: %w", i, err)
					}
					clear(want[off : off+4096])
				}
				got := make([]byte, n)
				if _, err := s.ReadAt(got, off); err != nil {
					return fmt.Errorf("step %d: read: %w", i, err)
				}
				if !bytes.Equal(got, want[off:off+int64(n)]) {
					return fmt.Errorf("step %d: read back differs", i)
				}
				return nil
			}
			for i := range 30 {
				var err error
				if i%10 == 5 {
					// The server dies between requests; the next one
					// waits for it to come back.
					srv.Kill()
					done := make(chan error, 1)
					go func() { done <- step(i) }()
					time.Sleep(200 * time.Millisecond)
					srv.Start()
					err = <-done
				} else {
					err = step(i)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(want))
			if _, err := s.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Error("the whole export read back differs")
			}
			s.Close()
			srv.Kill()
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(file, want) {
				t.Error("the file differs from what was written")
			}
			if !log.has("reconnected after") {
				t.Errorf("no reconnection logged:\n%s", log.String())
			}
		})
	}
}
