package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/nbdloop/nbdloop/attach"
)

// mountHelperName is the name mount(8) runs nbdloop by: installed as
// /sbin/mount.nbdloop (a symbolic link to nbdloop), it is the helper of
// file system type nbdloop, so that `mount -t nbdloop IMAGE DIR` and fstab
// lines of that type attach IMAGE and mount the file system on it.
const mountHelperName = "mount.nbdloop"

const mountHelp = `MOUNT HELPER:
Installed as /sbin/mount.nbdloop (make install), nbdloop is mount(8)'s
helper for the file system type nbdloop: it attaches the image with
--autoclear, mounts the device (with partition=N, its partition N) with
mount -i, and umount then detaches the device by itself. If the mount fails,
the device is detached at once.
  # mount -t nbdloop -o ro,partition=1 disk.raw.xz /mnt
  # echo '/srv/disk.raw.xz /mnt nbdloop ro,partition=1 0 0' >> /etc/fstab

Options it takes: ro and rw (also passed to mount), partition=N,
offset=BYTES, sizelimit=BYTES, format=FORMAT, filter=SPEC (repeatable; quote
a spec that has commas: filter="delay:read=100,write=100") and fstype=TYPE,
the file system's type (default: as mount probes it; or -t nbdloop.TYPE).
Every other option (noatime, nofail, x-systemd.*, ...) goes to mount. -s,
-n, -v and -N NS are passed to mount; -f does nothing.`

// mountRequest is what mount(8) asks of its helper: SOURCE DIR [-sfnv]
// [-N ns] [-o options] [-t type].
type mountRequest struct {
	source, dir string
	fake        bool
	verbose     bool
	mountFlags  []string // -s, -n, -N NS: passed to mount
	fstype      string   // "" lets mount probe
	attachArgs  []string // attach options from ours among the -o options
	partition   int      // partition=N; 0: the whole device
	ro, rw      bool
	options     []string // the -o options mount gets
}

// parseMountArgs reads the helper's command line (without argv[0]).
func parseMountArgs(args []string) (mountRequest, error) {
	var m mountRequest
	var pos, opts []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		switch a[1] {
		case 'o', 't', 'N':
			v := a[2:]
			if v == "" {
				if i+1 >= len(args) {
					return m, fmt.Errorf("%s needs a value", a)
				}
				i++
				v = args[i]
			}
			switch a[1] {
			case 'o':
				opts = append(opts, v)
			case 't':
				if sub, ok := strings.CutPrefix(v, "nbdloop."); ok {
					m.fstype = sub
				} else if v != "nbdloop" {
					return m, fmt.Errorf("-t %s: this helper mounts type nbdloop (or nbdloop.TYPE)", v)
				}
			case 'N':
				m.mountFlags = append(m.mountFlags, "-N", v)
			}
		default:
			for _, f := range a[1:] {
				switch f {
				case 's', 'n':
					m.mountFlags = append(m.mountFlags, "-"+string(f))
				case 'v':
					m.verbose = true
					m.mountFlags = append(m.mountFlags, "-v")
				case 'f':
					m.fake = true
				default:
					return m, fmt.Errorf("-%c: unknown option", f)
				}
			}
		}
	}
	if len(pos) != 2 {
		return m, errors.New("SOURCE and DIR expected")
	}
	m.source, m.dir = pos[0], pos[1]
	for _, o := range opts {
		parts, err := splitOptions(o)
		if err != nil {
			return m, err
		}
		for _, p := range parts {
			if err := m.option(p); err != nil {
				return m, err
			}
		}
	}
	if m.ro {
		m.attachArgs = append(m.attachArgs, "--read-only")
	}
	m.attachArgs = append(m.attachArgs, "--autoclear", m.source)
	return m, nil
}

// option sorts one -o option: ours become attach arguments, the rest go
// to mount.
func (m *mountRequest) option(p string) error {
	name, val, hasVal := strings.Cut(p, "=")
	val = unquote(val)
	flag := map[string]string{"offset": "--offset", "sizelimit": "--sizelimit", "format": "--format", "filter": "--filter"}[name]
	switch {
	case name == "ro" || name == "rw":
		m.ro, m.rw = name == "ro", name == "rw"
		m.options = append(m.options, name)
	case name == "fstype" && hasVal && val != "":
		m.fstype = val
	case name == "partition" && hasVal:
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 {
			return fmt.Errorf("partition=%s: a partition number (1, 2, ...) expected", val)
		}
		m.partition = n
		m.attachArgs = append(m.attachArgs, "--partscan")
	case flag != "" && hasVal:
		m.attachArgs = append(m.attachArgs, flag, val)
	case flag != "" || name == "partition" || name == "fstype":
		return fmt.Errorf("%s: needs a value (%s=...)", name, name)
	default:
		m.options = append(m.options, p)
	}
	return nil
}

// splitOptions splits mount options at commas outside double quotes, as
// libmount does.
func splitOptions(s string) ([]string, error) {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				if i > start {
					out = append(out, s[start:i])
				}
				start = i + 1
			}
		}
	}
	if quoted {
		return nil, fmt.Errorf("%s: unterminated \" quote", s)
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out, nil
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// runMountHelper is nbdloop as mount.nbdloop. It returns mount(8)'s exit
// statuses: 1 for a bad command line or no permission, 32 when attaching
// fails, and mount's own status when mounting fails.
func runMountHelper(args []string, stdout, stderr io.Writer) int {
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: %s\n", mountHelperName, oneLine(fmt.Sprintf(format, a...)))
		return code
	}
	m, err := parseMountArgs(args)
	if err != nil {
		return fail(1, "%v (usage: %s SOURCE DIR [-sfnv] [-N NS] [-o OPTIONS] [-t nbdloop[.TYPE]]; see nbdloop(8))", err, mountHelperName)
	}
	if m.fake {
		return 0
	}
	if os.Geteuid() != 0 {
		return fail(1, "permission denied (only root can attach devices)")
	}
	cfg, err := attachConfig(m.attachArgs)
	if err != nil {
		return fail(1, "%s: %v", m.source, err)
	}
	ctx := context.Background()
	d, warns, err := attach.Attach(ctx, cfg)
	for _, w := range warns {
		fmt.Fprintf(stderr, "%s: %s\n", mountHelperName, w)
	}
	if err != nil {
		return fail(32, "%v", err)
	}
	dev := d.Name
	if m.partition > 0 {
		name := fmt.Sprintf("%sp%d", strings.TrimPrefix(d.Name, "/dev/"), m.partition)
		if !slices.Contains(d.Partitions, name) {
			attach.Detach(ctx, d.Index, true)
			return fail(32, "%s: has no partition %d (partitions: %s)", m.source, m.partition, partitionList(d.Partitions))
		}
		dev = "/dev/" + name
	}
	opts := m.options
	if d.RO && !m.ro {
		// A read-only image (compressed, or -o ro): mount it so rather
		// than have mount retry after a failed read-write mount.
		opts = slices.DeleteFunc(slices.Clone(opts), func(o string) bool { return o == "rw" })
		opts = append([]string{"ro"}, opts...)
	}
	margs := append([]string{"-i"}, m.mountFlags...)
	if m.fstype != "" {
		margs = append(margs, "-t", m.fstype)
	}
	if len(opts) > 0 {
		margs = append(margs, "-o", strings.Join(opts, ","))
	}
	margs = append(margs, dev, m.dir)
	mount, err := exec.LookPath("mount")
	if err != nil {
		mount = "/bin/mount"
	}
	if m.verbose {
		fmt.Fprintf(stdout, "%s: %s attached to %s (--autoclear); mount %s\n", mountHelperName, m.source, d.Name, strings.Join(margs, " "))
	}
	cmd := exec.Command(mount, margs...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	if err := cmd.Run(); err != nil {
		code := 32
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		}
		if derr := attach.Detach(ctx, d.Index, true); derr != nil {
			fmt.Fprintf(stderr, "%s: %s\n", mountHelperName, oneLine(derr.Error()))
		}
		return fail(code, "mounting %s on %s failed; %s detached", dev, m.dir, d.Name)
	}
	// The server arms --autoclear when it sees the mount; arming it here
	// too makes an unmount that comes sooner detach the device as well.
	if err := attach.ArmAutoclear(d.Index, d.Backend); err != nil {
		fmt.Fprintf(stderr, "%s: warning: %s\n", mountHelperName, oneLine(err.Error()))
	}
	return 0
}

func partitionList(parts []string) string {
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
