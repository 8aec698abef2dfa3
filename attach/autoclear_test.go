package attach

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/kernel"
)

// TestLifecycleAutoclear: a server of an --autoclear device leaves the
// client flags alone while the device is unclaimed (the probes that open
// and close a new device must not end it), and once the device or a
// partition is mounted or held it sets NBD_CFLAG_DISCONNECT_ON_CLOSE once,
// with the backend id, while holding the device open; without --autoclear
// it never does.
func TestLifecycleAutoclear(t *testing.T) {
	tests := []struct {
		name      string
		autoclear bool
		claim     func(f *fakeHost)
	}{
		{"mounted", true, func(f *fakeHost) { f.mu.Lock(); f.mounts["/dev/nbd2"] = []string{"/mnt"}; f.mu.Unlock() }},
		{"partition mounted", true, func(f *fakeHost) {
			f.write("block/nbd2/nbd2p1/dev", "43:65\n")
			f.write("class/block/nbd2p1/dev", "43:65\n")
			f.mu.Lock()
			f.mounts["/dev/nbd2p1"] = []string{"/mnt"}
			f.mu.Unlock()
		}},
		{"held by device-mapper", true, func(f *fakeHost) { f.write("block/nbd2/holders/dm-0", "") }},
		{"without --autoclear", false, func(f *fakeHost) { f.mu.Lock(); f.mounts["/dev/nbd2"] = []string{"/mnt"}; f.mu.Unlock() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, d := serveHost(t)
			var mu sync.Mutex
			holds, open := 0, 0
			f.host.hold = func(index int) (func(), error) {
				mu.Lock()
				defer mu.Unlock()
				holds++
				open++
				return func() { mu.Lock(); open--; mu.Unlock() }, nil
			}
			path, _ := testImage(t)
			cfg := pinnedConfig(t, path)
			cfg.Autoclear = tt.autoclear
			res, done := served(t, context.Background(), f.host, cfg, func(Result) error { return nil })
			if res.Error != "" {
				t.Fatalf("attach failed: %s", res.Error)
			}
			if got := res.State.device().Autoclear; got != tt.autoclear {
				t.Errorf("device view: autoclear %v, want %v", got, tt.autoclear)
			}
			time.Sleep(3 * autoclearPoll)
			if n := len(d.reconfigured()); n != 0 {
				t.Fatalf("%d RECONFIGUREs before the device was claimed", n)
			}
			tt.claim(f)
			deadline := time.Now().Add(10 * autoclearPoll)
			for len(d.reconfigured()) == 0 && tt.autoclear && time.Now().Before(deadline) {
				time.Sleep(autoclearPoll / 4)
			}
			time.Sleep(3 * autoclearPoll)
			got := d.reconfigured()
			want := 0
			if tt.autoclear {
				want = 1
			}
			if len(got) != want {
				t.Fatalf("%d RECONFIGUREs after the claim, want %d", len(got), want)
			}
			if want == 1 {
				r := got[0]
				if r.Index != 2 || r.BackendID != res.State.BackendID || r.ClientFlags == nil || *r.ClientFlags != kernel.ClientDisconnectOnClose || r.Size != 0 || len(r.Sockets) != 0 {
					t.Errorf("RECONFIGURE %+v, want index 2, the backend id, client flags DISCONNECT_ON_CLOSE only", r)
				}
				mu.Lock()
				if holds != 1 || open != 0 {
					t.Errorf("device held %d times, %d still open; want once, released", holds, open)
				}
				mu.Unlock()
			}
			d.Disconnect(2)
			if err := waitServe(t, done); err != nil {
				t.Errorf("serve: %v", err)
			}
			if rec := readState(f.host.stateDir, 2); rec != nil {
				t.Errorf("state record left behind: %+v", rec)
			}
		})
	}
}
