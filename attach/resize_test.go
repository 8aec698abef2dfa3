package attach

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestNotResizable: only raw files and block devices change size, never a
// composite, a compressed or image format, or a source a restart would
// lose.
func TestNotResizable(t *testing.T) {
	tests := []struct {
		name   string
		st     State
		reason string // "" resizable, else part of the reason
	}{
		{"raw file", State{Config: Config{Source: "/srv/disk.img"}, Format: "raw"}, ""},
		{"raw file with a filter", State{Config: Config{Source: "/srv/disk.img", Filters: []string{"delay:read=1ms"}}, Format: "raw"}, ""},
		{"xz", State{Config: Config{Source: "/srv/disk.img.xz"}, Format: "xz"}, "xz has a fixed size"},
		{"qcow2", State{Config: Config{Source: "/srv/disk.qcow2"}, Format: "qcow2"}, "qcow2 has a fixed size"},
		{"memory", State{Config: Config{Source: "memory:1G"}, Format: "memory"}, "memory has a fixed size"},
		{"concat", State{Config: Config{Source: "/a.img", Composite: Composite{Layout: LayoutConcat, Sources: []string{"/a.img", "/b.img"}}}, Format: "concat"}, "composite"},
		{"partition", State{Config: Config{Source: "/a.img", Composite: Composite{Partition: 2}}, Format: "raw"}, "composite"},
		{"cow overlay", State{Config: Config{Source: "/srv/disk.img", Filters: []string{"cow"}}, Format: "raw"}, "cow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := notResizable(&tt.st)
			if (got == "") != (tt.reason == "") || !strings.Contains(got, tt.reason) {
				t.Errorf("notResizable = %q, want %q", got, tt.reason)
			}
		})
	}
}

// TestLifecycleResize: a server started for a resize serves the file at
// its new size, hands its sockets to the kernel and then sends the new
// size in a RECONFIGURE of its own (the kernel freezes the queue to
// resize, so not together with the sockets); its record has the new size.
// A server restarted without a resize refuses a file whose size changed.
func TestLifecycleResize(t *testing.T) {
	for _, resize := range []bool{true, false} {
		name := map[bool]string{true: "resize", false: "restart"}[resize]
		t.Run(name, func(t *testing.T) {
			f, d := serveHost(t)
			path, _ := testImage(t)
			cfg := pinnedConfig(t, path)
			cfg.Index = 2
			old := &State{Config: cfg, BackendID: "nbdloop:0123456789abcdef", Format: "raw", Size: 1 << 20, Resize: resize}
			f.write("block/nbd2/pid", "1\n")
			if err := os.Truncate(path, 3<<20); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := make(chan Result, 1)
			done := make(chan error, 1)
			go func() {
				done <- serve(ctx, f.host, cfg, false, serveOptions{resume: old}, func(res Result) error { got <- res; return nil })
			}()
			res := <-got
			if !resize {
				if !strings.Contains(res.Error, "now has 3145728 bytes, not the device's 1048576") {
					t.Errorf("restart of a changed file: %q, want the size refused", res.Error)
				}
				<-done
				return
			}
			if res.Error != "" {
				t.Fatalf("resize: %s", res.Error)
			}
			rs := d.reconfigured()
			if len(rs) != 2 || len(rs[0].Sockets) != cfg.Connections || rs[0].Size != 0 ||
				len(rs[1].Sockets) != 0 || rs[1].Size != 3<<20 || rs[1].BackendID != old.BackendID {
				t.Errorf("RECONFIGUREs %+v, want the sockets, then the size 3 MiB with the backend id", rs)
			}
			if res.State.Size != 3<<20 || res.State.Resize {
				t.Errorf("record: size %d, resize %v; want 3 MiB and no resize mark", res.State.Size, res.State.Resize)
			}
			cancel()
			<-done
		})
	}
}
