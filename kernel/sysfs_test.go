package kernel

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeSysfs writes files (path relative to root -> contents) under a fresh
// directory; a path ending in "/" makes an empty directory.
func fakeSysfs(t *testing.T, files map[string]string) Sysfs {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Sysfs{Root: root}
}

// connectedTree is a fake /sys: nbd0 connected with two sockets and three
// partitions, two of them held by device mapper; nbd1 idle but held by md;
// nbd2 and nbd3 with malformed or extreme values; nbd10, whose name starts
// like nbd1's partitions; and entries that must not be taken for devices or
// partitions (loop0, nbdx, nbd0px, nbd1p1-not-a-part).
var connectedTree = map[string]string{
	"block/nbd0/pid":                   "12345\n",
	"block/nbd0/backend":               "nbdloop:disk.img\n",
	"block/nbd0/size":                  "2097152\n",
	"block/nbd0/ro":                    "1\n",
	"block/nbd0/inflight":              "       3        7\n",
	"block/nbd0/mq/0/":                 "",
	"block/nbd0/mq/1/":                 "",
	"block/nbd0/holders/":              "",
	"block/nbd0/nbd0p1/holders/":       "",
	"block/nbd0/nbd0p2/holders/dm-0":   "",
	"block/nbd0/nbd0p2/holders/dm-1":   "",
	"block/nbd0/nbd0p10/holders/dm-0":  "",
	"block/nbd0/nbd0px/":               "",
	"block/nbd0/queue/":                "",
	"block/nbd1/size":                  "0\n",
	"block/nbd1/ro":                    "0\n",
	"block/nbd1/inflight":              "       0        0\n",
	"block/nbd1/mq/0/":                 "",
	"block/nbd1/holders/md127":         "",
	"block/nbd10/size":                 "0\n",
	"block/loop0/size":                 "0\n",
	"block/nbdx/":                      "",
	"class/block/nbd0/dev":             "43:0\n",
	"class/block/nbd0p2/dev":           "43:2\n",
	"class/block/nbd10/dev":            "43:320\n",
	"class/block/broken/dev":           "43\n",
	"block/nbd2/pid":                   "not a number\n",
	"block/nbd2/size":                  "-1\n",
	"block/nbd2/ro":                    "yes\n",
	"block/nbd2/inflight":              "1\n",
	"block/nbd2/backend":               "\n",
	"block/nbd2/holders/":              "",
	"block/nbd3/holders/":              "",
	"block/nbd3/size":                  "36028797018963968\n", // 2^55 sectors overflow int64 bytes
	"block/nbd3/nbd3p1/holders/x":      "",
	"block/nbd3/nbd3p1/holders/y":      "",
	"block/nbd3/nbd3p3/holders/x":      "",
	"block/nbd0/nbd0p1/dev":            "43:1\n",
	"block/nbd0/nbd0p2/dev":            "43:2\n",
	"block/nbd0/nbd0p10/dev":           "43:10\n",
	"block/nbd1/nbd1p1-not-a-part/dev": "",
}

func TestSysfsDevices(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	got, err := s.Devices()
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 3, 10}; !reflect.DeepEqual(got, want) {
		t.Errorf("Devices() = %v, want %v", got, want)
	}

	empty := fakeSysfs(t, map[string]string{"block/sda/": ""})
	if got, err := empty.Devices(); err != nil || len(got) != 0 {
		t.Errorf("Devices() without nbd = %v, %v, want none", got, err)
	}
	missing := Sysfs{Root: filepath.Join(t.TempDir(), "nope")}
	if _, err := missing.Devices(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Devices() without /sys/block = %v, want ErrNotExist", err)
	}
}

func TestSysfsPID(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	tests := []struct {
		name    string
		index   int
		pid     int
		ok      bool
		wantErr bool
	}{
		{name: "connected", index: 0, pid: 12345, ok: true},
		{name: "no pid file", index: 1},
		{name: "no device", index: 7},
		{name: "garbage", index: 2, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid, ok, err := s.PID(tt.index)
			if (err != nil) != tt.wantErr || pid != tt.pid || ok != tt.ok {
				t.Errorf("PID(%d) = %d, %v, %v, want %d, %v, error %v", tt.index, pid, ok, err, tt.pid, tt.ok, tt.wantErr)
			}
		})
	}
}

func TestSysfsBackend(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	tests := []struct {
		name  string
		index int
		want  string
	}{
		{name: "set", index: 0, want: "nbdloop:disk.img"},
		{name: "empty line", index: 2, want: ""},
		{name: "absent", index: 1, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Backend(tt.index)
			if err != nil || got != tt.want {
				t.Errorf("Backend(%d) = %q, %v, want %q", tt.index, got, err, tt.want)
			}
		})
	}
}

func TestSysfsSize(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	tests := []struct {
		name    string
		index   int
		want    int64
		wantErr string
	}{
		{name: "1 GiB", index: 0, want: 1 << 30},
		{name: "unconfigured", index: 1, want: 0},
		{name: "negative", index: 2, wantErr: `bad sector count "-1"`},
		{name: "overflow", index: 3, wantErr: `bad sector count "36028797018963968"`},
		{name: "no device", index: 7, wantErr: "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Size(tt.index)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Size(%d) = %d, %v, want error containing %q", tt.index, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Size(%d) = %d, %v, want %d", tt.index, got, err, tt.want)
			}
		})
	}
}

func TestSysfsReadOnly(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	tests := []struct {
		name    string
		index   int
		want    bool
		wantErr bool
	}{
		{name: "read-only", index: 0, want: true},
		{name: "writable", index: 1, want: false},
		{name: "garbage", index: 2, wantErr: true},
		{name: "absent", index: 10, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ReadOnly(tt.index)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ReadOnly(%d) = %v, %v, want %v, error %v", tt.index, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSysfsConnections(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	tests := []struct {
		name  string
		index int
		want  int
	}{
		{name: "two sockets", index: 0, want: 2},
		{name: "idle device keeps one queue", index: 1, want: 1},
		{name: "no mq directory", index: 10, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Connections(tt.index)
			if err != nil || got != tt.want {
				t.Errorf("Connections(%d) = %d, %v, want %d", tt.index, got, err, tt.want)
			}
		})
	}
}

func TestSysfsPartitions(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	tests := []struct {
		name    string
		index   int
		want    []string
		wantErr bool
	}{
		{name: "numeric order", index: 0, want: []string{"nbd0p1", "nbd0p2", "nbd0p10"}},
		{name: "none", index: 1, want: []string{}},
		{name: "nbd1 partitions are not nbd10's", index: 10, want: []string{}},
		{name: "no device", index: 7, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Partitions(tt.index)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Partitions(%d) error = %v, want error %v", tt.index, err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Partitions(%d) = %q, want %q", tt.index, got, tt.want)
			}
		})
	}
}

func TestSysfsHolders(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	tests := []struct {
		name  string
		index int
		want  []string
	}{
		{name: "partition holders, deduplicated", index: 0, want: []string{"dm-0", "dm-1"}},
		{name: "disk holder", index: 1, want: []string{"md127"}},
		{name: "none", index: 2, want: nil},
		{name: "no holders directories", index: 10, want: nil},
		{name: "several partitions", index: 3, want: []string{"x", "y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Holders(tt.index)
			if err != nil || len(got) != len(tt.want) || (len(got) > 0 && !reflect.DeepEqual(got, tt.want)) {
				t.Errorf("Holders(%d) = %q, %v, want %q", tt.index, got, err, tt.want)
			}
		})
	}
}

func TestSysfsInflight(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	tests := []struct {
		name          string
		index         int
		reads, writes int
		wantErr       bool
	}{
		{name: "busy", index: 0, reads: 3, writes: 7},
		{name: "idle", index: 1},
		{name: "one field", index: 2, wantErr: true},
		{name: "absent", index: 10, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w, err := s.Inflight(tt.index)
			if (err != nil) != tt.wantErr || r != tt.reads || w != tt.writes {
				t.Errorf("Inflight(%d) = %d, %d, %v, want %d, %d, error %v", tt.index, r, w, err, tt.reads, tt.writes, tt.wantErr)
			}
		})
	}
}

func TestSysfsDevNum(t *testing.T) {
	s := fakeSysfs(t, connectedTree)
	tests := []struct {
		name         string
		dev          string
		major, minor uint32
		wantErr      bool
	}{
		{name: "disk", dev: "nbd0", major: 43, minor: 0},
		{name: "partition", dev: "nbd0p2", major: 43, minor: 2},
		{name: "high index", dev: "nbd10", major: 43, minor: 320},
		{name: "malformed", dev: "broken", wantErr: true},
		{name: "absent", dev: "nbd5", wantErr: true},
		{name: "path traversal", dev: "../block/nbd0", wantErr: true},
		{name: "empty", dev: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			major, minor, err := s.DevNum(tt.dev)
			if (err != nil) != tt.wantErr || major != tt.major || minor != tt.minor {
				t.Errorf("DevNum(%q) = %d:%d, %v, want %d:%d, error %v", tt.dev, major, minor, err, tt.major, tt.minor, tt.wantErr)
			}
		})
	}
}

func TestSysfsDefaultRoot(t *testing.T) {
	if got := (Sysfs{}).path(3, "pid"); got != "/sys/block/nbd3/pid" {
		t.Errorf("path = %q, want /sys/block/nbd3/pid", got)
	}
}

const mountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
40 22 43:1 / /mnt/nbd\040disk rw,relatime shared:20 - ext4 /dev/nbd0p1 rw
41 22 43:1 /sub /srv/bind rw,relatime shared:20 - ext4 /dev/nbd0p1 rw
42 22 43:0 / /mnt/tab\011and\134slash ro - iso9660 /dev/nbd0 ro
43 22 43:32 / /mnt/other rw - xfs /dev/nbd1 rw
`

func TestMountPoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(path, []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		major, minor uint32
		want         []string
	}{
		{name: "partition mounted twice, escaped space", major: 43, minor: 1, want: []string{"/mnt/nbd disk", "/srv/bind"}},
		{name: "tab and backslash", major: 43, minor: 0, want: []string{"/mnt/tab\tand\\slash"}},
		{name: "not mounted", major: 43, minor: 64, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MountPoints(path, tt.major, tt.minor)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("MountPoints(%d:%d) = %q, %v, want %q", tt.major, tt.minor, got, err, tt.want)
			}
		})
	}
}

func TestMountPointsErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{name: "short line", content: "22 1 8:1 /\n", want: "mountinfo:1: 4 fields, want at least 5"},
		{name: "bad device", content: "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n23 1 x / /a rw - ext4 a rw\n", want: `mountinfo:2: bad device number "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mountinfo")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := MountPoints(path, 43, 0)
			if err == nil || !strings.HasSuffix(err.Error(), tt.want) {
				t.Errorf("MountPoints() error = %v, want suffix %q", err, tt.want)
			}
		})
	}
	if _, err := MountPoints(filepath.Join(t.TempDir(), "absent"), 43, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("MountPoints(absent) error = %v, want ErrNotExist", err)
	}
}

func TestMountPointsDefaultPath(t *testing.T) {
	// /proc/self/mountinfo always has the root mount; this only checks
	// that "" reads it.
	if _, err := MountPoints("", 0, 0); err != nil {
		t.Errorf("MountPoints(\"\") error = %v", err)
	}
}

func TestUnescapeOctal(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: "/mnt/a", want: "/mnt/a"},
		{name: "space", in: `/a\040b`, want: "/a b"},
		{name: "newline", in: `/a\012`, want: "/a\n"},
		{name: "backslash", in: `/a\134b`, want: `/a\b`},
		{name: "truncated escape", in: `/a\04`, want: `/a\04`},
		{name: "out of byte range", in: `/a\777`, want: `/a\777`},
		{name: "not octal", in: `/a\08x`, want: `/a\08x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unescapeOctal(tt.in); got != tt.want {
				t.Errorf("unescapeOctal(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMountPointsOfMatchesSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mountinfo")
	info := "36 25 0:45 / /mnt/btr rw,relatime shared:1 - btrfs /dev/nbd0p1 rw,space_cache=v2\n" +
		"37 25 43:1 / /mnt/ext rw - ext4 /dev/nbd0p1 rw\n" +
		"38 25 0:46 / /mnt/other rw - btrfs /dev/nbd1 rw\n"
	if err := os.WriteFile(path, []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := MountPointsOf(path, 43, 1, "/dev/nbd0p1")
	if want := []string{"/mnt/btr", "/mnt/ext"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("MountPointsOf(43:1, /dev/nbd0p1) = %q, %v, want %q", got, err, want)
	}
	got, err = MountPoints(path, 43, 1)
	if want := []string{"/mnt/ext"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("MountPoints(43:1) = %q, %v, want %q", got, err, want)
	}
}
