package attach

import (
	"os"
	"testing"

	"github.com/nbdloop/nbdloop/nbd"
)

// TestClientCounter: the counts a server publishes are read back for its
// own pid only, per export and in total, from a file private to the user.
func TestClientCounter(t *testing.T) {
	dir := t.TempDir()
	exports := []NetExportState{{Name: "", Source: "a.img"}, {Name: "b", Source: "b.img"}}
	c := newClientCounter(dir, 100, 200, exports, t.Logf)
	a, b := &nbd.Export{Name: ""}, &nbd.Export{Name: "b"}
	tests := []struct {
		name       string
		change     func()
		pid        int
		total      int
		perExports []int
	}{
		{"none yet", func() {}, 200, 0, []int{0, 0}},
		{"one on each, another on b", func() { c.change(a, 1); c.change(b, 1); c.change(b, 1) }, 200, 3, []int{1, 2}},
		{"one leaves b", func() { c.change(b, -1) }, 200, 2, []int{1, 1}},
		{"another server's file says nothing", func() {}, 201, 0, []int{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.change()
			st := NetState{Supervisor: 100, PID: tt.pid, Exports: append([]NetExportState(nil), exports...)}
			st.countClients(dir)
			if st.Clients != tt.total || st.Exports[0].Clients != tt.perExports[0] || st.Exports[1].Clients != tt.perExports[1] {
				t.Errorf("counts %d (%d, %d), want %d %v", st.Clients, st.Exports[0].Clients, st.Exports[1].Clients, tt.total, tt.perExports)
			}
		})
	}
	fi, err := os.Stat(netClientsPath(dir, 100))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the file: %v, want mode 0600", err)
	}
}
