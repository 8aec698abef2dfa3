package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestParseMountArgs: mount(8)'s helper command line, as libmount builds
// it, sorted into attach arguments and what mount gets.
func TestParseMountArgs(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		attachArgs []string
		options    []string
		fstype     string
		partition  int
		mountFlags []string
		err        string
	}{
		{name: "plain", args: []string{"disk.img", "/mnt"},
			attachArgs: []string{"--autoclear", "disk.img"}},
		{name: "ro partition", args: []string{"/srv/disk.raw.xz", "/mnt", "-o", "ro,partition=1"},
			attachArgs: []string{"--partscan", "--read-only", "--autoclear", "/srv/disk.raw.xz"}, options: []string{"ro"}, partition: 1},
		{name: "fstab line with mount options", args: []string{"/srv/disk.img", "/mnt", "-o", "rw,noatime,offset=1M,sizelimit=64M,x-systemd.device-timeout=5", "-t", "nbdloop"},
			attachArgs: []string{"--offset", "1M", "--sizelimit", "64M", "--autoclear", "/srv/disk.img"}, options: []string{"rw", "noatime", "x-systemd.device-timeout=5"}},
		{name: "fstype and format", args: []string{"d.img", "/mnt", "-ofstype=ext4,format=raw"},
			attachArgs: []string{"--format", "raw", "--autoclear", "d.img"}, fstype: "ext4"},
		{name: "subtype", args: []string{"d.img", "/mnt", "-t", "nbdloop.xfs"},
			attachArgs: []string{"--autoclear", "d.img"}, fstype: "xfs"},
		{name: "quoted filters", args: []string{"d.img", "/mnt", "-o", `filter="delay:read=100,write=100",filter=stats,nodev`},
			attachArgs: []string{"--filter", "delay:read=100,write=100", "--filter", "stats", "--autoclear", "d.img"}, options: []string{"nodev"}},
		{name: "flags", args: []string{"d.img", "/mnt", "-sn", "-v", "-N", "/proc/1/ns/mnt"},
			attachArgs: []string{"--autoclear", "d.img"}, mountFlags: []string{"-s", "-n", "-v", "-N", "/proc/1/ns/mnt"}},
		{name: "one argument", args: []string{"d.img"}, err: "SOURCE and DIR expected"},
		{name: "other type", args: []string{"d.img", "/mnt", "-t", "ext4"}, err: "-t ext4: this helper mounts type nbdloop"},
		{name: "bad partition", args: []string{"d.img", "/mnt", "-o", "partition=0"}, err: "partition=0: a partition number"},
		{name: "offset without value", args: []string{"d.img", "/mnt", "-o", "offset"}, err: "offset: needs a value"},
		{name: "open quote", args: []string{"d.img", "/mnt", "-o", `filter="delay`}, err: "unterminated"},
		{name: "unknown flag", args: []string{"d.img", "/mnt", "-x"}, err: "-x: unknown option"},
		{name: "-o without value", args: []string{"d.img", "/mnt", "-o"}, err: "-o needs a value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseMountArgs(tt.args)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.attachArgs, tt.attachArgs) || !reflect.DeepEqual(m.options, tt.options) ||
				m.fstype != tt.fstype || m.partition != tt.partition || !reflect.DeepEqual(m.mountFlags, tt.mountFlags) {
				t.Errorf("got attach %q, options %q, fstype %q, partition %d, flags %q", m.attachArgs, m.options, m.fstype, m.partition, m.mountFlags)
			}
			if _, err := attachConfig(m.attachArgs); err != nil {
				t.Errorf("attach refuses the arguments: %v", err)
			}
		})
	}
}

// TestMountHelperExit: the helper's exit statuses for what it refuses
// before attaching (1, one line naming it) and for -f (0, nothing done).
func TestMountHelperExit(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"d.img"}, 1, "mount.nbdloop: SOURCE and DIR expected (usage: mount.nbdloop SOURCE DIR"},
		{[]string{"d.img", "/mnt", "-o", "partition=x"}, 1, "mount.nbdloop: partition=x: a partition number"},
		{[]string{"d.img", "/mnt", "-f", "-o", "ro"}, 0, ""},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := runMountHelper(tt.args, &stdout, &stderr)
		if code != tt.code || !strings.HasPrefix(stderr.String(), tt.want) || strings.Count(stderr.String(), "\n") > 1 || stdout.Len() > 0 {
			t.Errorf("%q: exit %d, stderr %q; want %d, %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
	}
}
