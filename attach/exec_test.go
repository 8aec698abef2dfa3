package attach

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseExecSpec(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Spec
		wantErr string
	}{
		{name: "path", in: "exec:./disk.sh", want: Spec{Kind: "exec", Path: "./disk.sh"}},
		{name: "options", in: "exec:/s/disk.py,persistent,timeout=5s,file=a:b.img",
			want: Spec{Kind: "exec", Path: "/s/disk.py", Options: "persistent,timeout=5s,file=a:b.img"}},
		{name: "colon in path", in: "exec:a:b", want: Spec{Kind: "exec", Path: "a:b"}},
		{name: "file named like exec", in: "file:exec:x", want: Spec{Kind: "file", Path: "exec:x"}},
		{name: "no path", in: "exec:", wantErr: "exec:: no program given"},
		{name: "no path but options", in: "exec:,persistent", wantErr: "no program given"},
		{name: "bad timeout", in: "exec:x,timeout=soon", wantErr: "exec:x,timeout=soon: timeout=soon: not a duration"},
		{name: "zero timeout", in: "exec:x,timeout=0", wantErr: "must be more than 0"},
		{name: "empty option", in: "exec:x,", wantErr: "empty option"},
		{name: "bad key", in: "exec:x,a b=1", wantErr: "key must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSpec(%q) = %#v, %v, want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSpec(%q) = %#v, %v, want %#v", tt.in, got, err, tt.want)
			}
			if s := got.String(); s != tt.in {
				t.Errorf("%#v.String() = %q, want %q", got, s, tt.in)
			}
		})
	}
}

func TestOpenSourceExec(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	odd := write("odd.sh", `case $1 in get_size) echo 5000 ;; pread) head -c $3 /dev/zero ;; *) exit 2 ;; esac`, 0o755)
	o := openSource(t, Spec{Kind: "exec", Path: odd}, OpenOptions{BlockSize: 4096})
	if o.Format != "exec" || o.Desc != "exec:"+odd || o.Source.Size() != 4096 || !o.Source.Caps().ReadOnly {
		t.Errorf("OpenSource = format %q, desc %q, size %d, caps %v; want exec, exec:%s, 4096, ro", o.Format, o.Desc, o.Source.Size(), o.Source.Caps(), odd)
	}
	if len(o.Warnings) != 1 || !strings.Contains(o.Warnings[0], "size 5000 rounded down to 4096 bytes") {
		t.Errorf("Warnings = %q, want the rounding", o.Warnings)
	}
	p := write("p.sh", `while read -r cmd rest; do case $cmd in get_size) echo "0 1M" ;; *) echo 2 ;; esac; done`, 0o755)
	o = openSource(t, Spec{Kind: "exec", Path: p, Options: "persistent"}, OpenOptions{BlockSize: 512})
	if o.Format != "exec-persistent" || o.Source.Size() != 1<<20 {
		t.Errorf("OpenSource = format %q, size %d; want exec-persistent, 1M", o.Format, o.Source.Size())
	}

	tests := []struct {
		name string
		spec Spec
		bs   int64
		want string
	}{
		{name: "missing", spec: Spec{Kind: "exec", Path: filepath.Join(dir, "nope.sh")}, want: "nope.sh: no such file or directory (check the path)"},
		{name: "not executable", spec: Spec{Kind: "exec", Path: write("plain.sh", "", 0o644)},
			want: "plain.sh: not an executable file (make it one: chmod +x "},
		{name: "directory", spec: Spec{Kind: "exec", Path: dir},
			want: dir + ": is a directory (exec: runs a program: give its path, e.g. exec:" + filepath.Join(dir, "disk.sh") + ")"},
		{name: "smaller than a block", spec: Spec{Kind: "exec", Path: write("tiny.sh", `case $1 in get_size) echo 100 ;; *) exit 2 ;; esac`, 0o755)},
			want: "get_size printed 100, smaller than one 512-byte block"},
		{name: "minimum block size", spec: Spec{Kind: "exec", Path: write("bs.sh", `case $1 in get_size) echo 1M ;; block_size) echo 4K 4K 1M ;; *) exit 2 ;; esac`, 0o755)},
			want: "minimum block size is 4096 bytes, more than the 512-byte block size (attach with -b 4096)"},
		{name: "script error", spec: Spec{Kind: "exec", Path: write("err.sh", `echo "EINVAL need size=" >&2; exit 1`, 0o755)},
			want: "err.sh load: EINVAL need size="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := OpenSource(tt.spec, OpenOptions{BlockSize: 512})
			if err == nil {
				o.Source.Close()
				t.Fatalf("OpenSource = nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("OpenSource = %q, want one line containing %q", err, tt.want)
			}
		})
	}
}

func TestConfigValidateExec(t *testing.T) {
	for _, mod := range []func(c *Config){
		func(c *Config) { c.Offset = 512 },
		func(c *Config) { c.SizeLimit = 4096 },
		func(c *Config) { c.DirectIO = true },
	} {
		c := NewConfig("exec:./disk.sh")
		mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "apply to files only") {
			t.Errorf("Validate(%+v) = %v, want the files-only error", c, err)
		}
	}
	c := NewConfig("exec:./disk.sh,timeout=1m")
	if err := c.Validate(); err != nil {
		t.Errorf("Validate(exec:./disk.sh,timeout=1m) = %v, want nil", err)
	}
}
