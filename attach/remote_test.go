package attach

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/nbdtest"
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
)

// TestOpenRemote opens nbd+unix:// SOURCEs the way the server does,
// against nbdkit and nbd's own server: what list shows, the block size
// checks, and data through the Source.
func TestOpenRemote(t *testing.T) {
	kit := nbdtest.Nbdkit(t, "memory", "1000000") // not a multiple of 512
	own := ownExport(t, 1<<20, 4096)
	tests := []struct {
		name     string
		uri      string
		opts     OpenOptions
		size     int64
		ro       bool
		warning  string
		wantErr  string
		wantDesc string
	}{
		{name: "nbdkit", uri: kit.URI, opts: OpenOptions{BlockSize: 512}, size: 999936,
			warning: "size 1000000 rounded down to 999936 bytes, a multiple of the 512-byte block size", wantDesc: kit.URI},
		{name: "read-only", uri: kit.URI, opts: OpenOptions{BlockSize: 512, ReadOnly: true}, size: 999936, ro: true,
			warning: "rounded down to 999936 bytes", wantDesc: kit.URI},
		{name: "own server, 4 KiB blocks", uri: own, opts: OpenOptions{BlockSize: 4096}, size: 1 << 20, wantDesc: own},
		{name: "block size below the server's", uri: own, opts: OpenOptions{BlockSize: 512},
			wantErr: own + ": the server's minimum block size is 4096 bytes, more than the 512-byte block size (attach with -b 4096)"},
		{name: "no server", uri: "nbd+unix:///?socket=" + filepath.Join(t.TempDir(), "none"), opts: OpenOptions{BlockSize: 512},
			wantErr: "connect: no such file or directory (is the server running?)"},
		{name: "unknown export", uri: strings.Replace(own, "///disk", "///nope", 1), opts: OpenOptions{BlockSize: 4096},
			wantErr: `: nbd: the server refused export "nope": NBD_REP_ERR_UNKNOWN (no such export)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := ParseSpec(tt.uri)
			if err != nil {
				t.Fatal(err)
			}
			o, err := OpenSource(spec, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("OpenSource(%s) = %v, want an error containing %q", tt.uri, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer o.Source.Close()
			if o.Desc != tt.wantDesc || o.Format != "nbd" || o.Source.Size() != tt.size || o.Source.Caps().ReadOnly != tt.ro {
				t.Errorf("opened %q, %q, %d bytes, read-only %v; want %q, nbd, %d, %v", o.Desc, o.Format, o.Source.Size(), o.Source.Caps().ReadOnly, tt.wantDesc, tt.size, tt.ro)
			}
			if (len(o.Warnings) > 0) != (tt.warning != "") || tt.warning != "" && !strings.Contains(o.Warnings[0], tt.warning) {
				t.Errorf("warnings %q, want %q", o.Warnings, tt.warning)
			}
			if tt.ro {
				if _, err := o.Source.WriteAt(make([]byte, 512), 0); err != sources.ErrReadOnly {
					t.Errorf("write to a read-only remote: %v", err)
				}
				return
			}
			p := bytes.Repeat([]byte{0x5a}, 4096)
			if _, err := o.Source.WriteAt(p, 8192); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4096)
			if _, err := o.Source.ReadAt(got, 8192); err != nil || !bytes.Equal(got, p) {
				t.Errorf("read back: %v, equal %v", err, bytes.Equal(got, p))
			}
		})
	}
}

// ownExport serves a memory export "disk" of size bytes with the given
// minimum block size on a Unix socket and returns its URI.
func ownExport(t *testing.T, size int64, minBlock uint32) string {
	m, err := sources.NewMemory(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	exp := &nbd.Export{Name: "disk", Server: nbd.NewServer(m, nbd.Options{}), MinBlockSize: minBlock}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- nbd.ServeListeners(ctx, []net.Listener{ln}, oneExport{exp}, nbd.ListenOptions{}) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return nbd.URI{Network: "unix", Address: sock, Export: "disk"}.String()
}

type oneExport struct{ e *nbd.Export }

func (x oneExport) Export(name string) *nbd.Export {
	if name == x.e.Name {
		return x.e
	}
	return nil
}
func (x oneExport) List() []*nbd.Export { return []*nbd.Export{x.e} }
