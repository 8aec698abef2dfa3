package attach

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateDriver(t *testing.T) {
	for _, c := range []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"default", func(c *Config) {}, ""},
		{"nbd", func(c *Config) { c.Driver = DriverNBD }, ""},
		{"ublk", func(c *Config) { c.Driver = DriverUblk }, ""},
		{"ublk read-only, 4k", func(c *Config) { c.Driver, c.ReadOnly, c.BlockSize = DriverUblk, true, 4096 }, ""},
		{"unknown", func(c *Config) { c.Driver = "loop" }, `--driver "loop": not a driver (nbd or ublk)`},
		{"ublk --device", func(c *Config) { c.Driver, c.Index = DriverUblk, 3 }, ""},
		{"ublk --autoclear", func(c *Config) { c.Driver, c.Autoclear = DriverUblk, true }, "--driver ublk: --autoclear"},
		{"ublk --partscan", func(c *Config) { c.Driver, c.PartScan = DriverUblk, true }, "--driver ublk: --partscan"},
		{"nbd --partscan", func(c *Config) { c.Driver, c.PartScan = DriverNBD, true }, ""},
		{"ublk --filter stats", func(c *Config) { c.Driver, c.Filters = DriverUblk, []string{"stats"} }, ""},
		{"ublk --filter log", func(c *Config) { c.Driver, c.Filters = DriverUblk, []string{"log:file=/tmp/x.jsonl"} }, ""},
		{"nbd --filter stats", func(c *Config) { c.Driver, c.Filters = DriverNBD, []string{"stats"} }, ""},
	} {
		cfg := NewConfig("memory:1M")
		c.edit(&cfg)
		err := cfg.Validate()
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: Validate() = %v, want nil", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: Validate() = %v, want an error containing %q", c.name, err, c.wantErr)
		}
	}
}

func TestParseUblkDevice(t *testing.T) {
	for _, c := range []struct {
		in   string
		id   int
		isOK bool
	}{
		{"/dev/ublkb0", 0, true}, {"ublkb12", 12, true}, {"/dev/ublkb", 0, false},
		{"/dev/ublkc0", 0, false}, {"/dev/ublkb01", 0, false}, {"/dev/ublkb-1", 0, false},
		{"/dev/nbd0", 0, false}, {"ublkb1x", 0, false},
	} {
		id, ok := ParseUblkDevice(c.in)
		if ok != c.isOK || (ok && id != c.id) {
			t.Errorf("ParseUblkDevice(%q) = %d, %v; want %d, %v", c.in, id, ok, c.id, c.isOK)
		}
	}
}

// TestListUblk lists ublk devices from records and a fake sysfs: a live
// server's device, a dead server's device the kernel still has, and a
// stale record (no device, no server) that is skipped.
func TestListUblk(t *testing.T) {
	f := newFakeHost(t)
	live, _ := f.child()
	f.write("class/block/ublkb0/dev", "259:0\n")
	f.write("class/block/ublkb0/size", "2048\n")
	f.mounts["/dev/ublkb0"] = []string{"/mnt"}
	f.write("class/block/ublkb1/dev", "259:1\n")
	f.write("class/block/ublkb1/size", "8\n")
	for _, st := range []*State{
		{Config: Config{Index: 0, Driver: DriverUblk, BlockSize: 512}, PID: live.Process.Pid, Desc: "memory:1M", Size: 1 << 20},
		{Config: Config{Index: 1, Driver: DriverUblk}, PID: 999999999, Desc: "a.img", Size: 4096},
		{Config: Config{Index: 2, Driver: DriverUblk}, PID: 999999999, Desc: "gone.img", Size: 4096},
	} {
		if err := writeRecord(f.host.stateDir, ublkStatePath(f.host.stateDir, st.Config.Index), st); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(f.host.stateDir, "ublkb07.json"), []byte("{}"), 0o600)
	devs, err := f.host.list(nil)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		name, state, source, driver string
		size                        int64
		mounts                      int
	}
	var got []row
	for _, d := range devs {
		got = append(got, row{d.Name, d.State, d.Source, d.Driver, d.Size, len(d.Mounts)})
	}
	want := []row{
		{"/dev/ublkb0", StateRunning, "memory:1M", DriverUblk, 1 << 20, 1},
		{"/dev/ublkb1", StateDead, "a.img", DriverUblk, 4096, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("list = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("device %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if devs, _ := f.host.list([]int{0}); len(devs) != 0 {
		t.Errorf("list of nbd0 shows %d devices, want none (ublk devices only in the full list)", len(devs))
	}
}
