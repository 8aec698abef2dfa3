package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Sysfs reads NBD device state from sysfs mounted at Root ("" means
// "/sys"). Tests point Root at a fake tree.
type Sysfs struct {
	Root string
}

func (s Sysfs) root() string {
	if s.Root == "" {
		return "/sys"
	}
	return s.Root
}

func diskName(index int) string {
	return "nbd" + strconv.Itoa(index)
}

// path returns the path of a file in /sys/block/nbdN.
func (s Sysfs) path(index int, elem ...string) string {
	return filepath.Join(append([]string{s.root(), "block", diskName(index)}, elem...)...)
}

// Devices returns the indices of all /sys/block/nbdN, sorted. With the
// module loaded these are the nbds_max devices created at load time plus
// any CONNECT created since.
func (s Sysfs) Devices() ([]int, error) {
	entries, err := os.ReadDir(filepath.Join(s.root(), "block"))
	if err != nil {
		return nil, err
	}
	var indices []int
	for _, e := range entries {
		if n, ok := nbdIndex(e.Name()); ok {
			indices = append(indices, n)
		}
	}
	slices.Sort(indices)
	return indices, nil
}

// nbdIndex parses "nbdN" (not a partition "nbdNpM").
func nbdIndex(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, "nbd")
	if !ok || !isDigits(digits) {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// PID returns the contents of /sys/block/nbdN/pid, which exists while the
// device is configured (after CONNECT, until the last opener closes a
// disconnected device); ok is false when the file is absent.
//
// The kernel records task_pid_nr(current) of the thread that sent CONNECT,
// a thread id: in a Go program that is usually not the process id (the Tgid
// line of /proc/PID/status maps it). The file keeps the number after that
// process dies, so a present file does not prove a live server.
func (s Sysfs) PID(index int) (pid int, ok bool, err error) {
	text, err := s.read(index, "pid")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	pid, err = s.parseInt(index, "pid", text)
	if err != nil {
		return 0, false, err
	}
	return pid, true, nil
}

// Backend returns /sys/block/nbdN/backend without its newline: the
// BackendID given to Connect, "" if none was given, or "" if the file is
// absent (device not configured by netlink, or kernel before 5.14).
func (s Sysfs) Backend(index int) (string, error) {
	text, err := s.read(index, "backend")
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return text, err
}

// Size returns the device size in bytes: /sys/block/nbdN/size counts
// 512-byte sectors whatever the block size. It is 0 while unconfigured.
func (s Sysfs) Size(index int) (int64, error) {
	text, err := s.read(index, "size")
	if err != nil {
		return 0, err
	}
	sectors, err := strconv.ParseInt(text, 10, 64)
	if err != nil || sectors < 0 || sectors > (1<<63-1)/512 {
		return 0, fmt.Errorf("%s: bad sector count %q", s.path(index, "size"), text)
	}
	return sectors * 512, nil
}

// ReadOnly reports /sys/block/nbdN/ro, set when the server flags include
// NBD_FLAG_READ_ONLY (or by BLKROSET).
func (s Sysfs) ReadOnly(index int) (bool, error) {
	text, err := s.read(index, "ro")
	if err != nil {
		return false, err
	}
	switch text {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("%s: bad value %q", s.path(index, "ro"), text)
}

// Connections counts the blk-mq hardware queues in /sys/block/nbdN/mq/; the
// driver makes one per socket at CONNECT. An unconfigured device still has
// the one queue it was created with, so this is only meaningful while
// connected. 0 if mq/ is absent.
func (s Sysfs) Connections(index int) (int, error) {
	entries, err := os.ReadDir(s.path(index, "mq"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if isDigits(e.Name()) {
			n++
		}
	}
	return n, nil
}

// Partitions returns the partitions of device index (nbd0p1, nbd0p2, ...)
// in partition-number order.
func (s Sysfs) Partitions(index int) ([]string, error) {
	entries, err := os.ReadDir(s.path(index))
	if err != nil {
		return nil, err
	}
	prefix := diskName(index) + "p"
	type part struct {
		name string
		n    int
	}
	var parts []part
	for _, e := range entries {
		digits, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !isDigits(digits) {
			continue
		}
		n, err := strconv.Atoi(digits)
		if err != nil {
			continue
		}
		parts = append(parts, part{e.Name(), n})
	}
	slices.SortFunc(parts, func(a, b part) int { return a.n - b.n })
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.name
	}
	return names, nil
}

// Holders returns what holds device index or any of its partitions (device
// mapper, md, ...), from the holders/ directories, sorted and without
// duplicates. Mounts do not appear here; see MountPoints.
func (s Sysfs) Holders(index int) ([]string, error) {
	parts, err := s.Partitions(index)
	if err != nil {
		return nil, err
	}
	dirs := []string{s.path(index, "holders")}
	for _, p := range parts {
		dirs = append(dirs, s.path(index, p, "holders"))
	}
	var holders []string
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			holders = append(holders, e.Name())
		}
	}
	slices.Sort(holders)
	return slices.Compact(holders), nil
}

// Inflight returns the read and write requests the block layer has in
// flight on device index (/sys/block/nbdN/inflight).
func (s Sysfs) Inflight(index int) (reads, writes int, err error) {
	text, err := s.read(index, "inflight")
	if err != nil {
		return 0, 0, err
	}
	fields := strings.Fields(text)
	if len(fields) != 2 {
		return 0, 0, fmt.Errorf("%s: bad value %q", s.path(index, "inflight"), text)
	}
	if reads, err = s.parseInt(index, "inflight", fields[0]); err != nil {
		return 0, 0, err
	}
	if writes, err = s.parseInt(index, "inflight", fields[1]); err != nil {
		return 0, 0, err
	}
	return reads, writes, nil
}

// DevNum returns the device number of block device name (nbd0, nbd0p1, or
// any other) from /sys/class/block/NAME/dev.
func (s Sysfs) DevNum(name string) (major, minor uint32, err error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return 0, 0, fmt.Errorf("invalid block device name %q", name)
	}
	path := filepath.Join(s.root(), "class", "block", name, "dev")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	major, minor, err = parseDevNum(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	return major, minor, nil
}

// parseDevNum parses "MAJOR:MINOR".
func parseDevNum(s string) (major, minor uint32, err error) {
	ma, mi, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("bad device number %q", s)
	}
	a, err1 := strconv.ParseUint(ma, 10, 32)
	b, err2 := strconv.ParseUint(mi, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("bad device number %q", s)
	}
	return uint32(a), uint32(b), nil
}

// read returns a /sys/block/nbdN file without surrounding white space.
func (s Sysfs) read(index int, name string) (string, error) {
	b, err := os.ReadFile(s.path(index, name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func (s Sysfs) parseInt(index int, name, text string) (int, error) {
	n, err := strconv.Atoi(text)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: bad value %q", s.path(index, name), text)
	}
	return n, nil
}

// MountPoints returns, in file order, the mount points in mountinfoPath
// ("" means /proc/self/mountinfo) whose device is major:minor. Octal
// escapes the kernel uses for white space and backslashes (\040) are
// decoded.
func MountPoints(mountinfoPath string, major, minor uint32) ([]string, error) {
	return MountPointsOf(mountinfoPath, major, minor, "")
}

// MountPointsOf is MountPoints that also matches mounts whose source (the
// field after the file system type) is the device path source. That is
// needed for btrfs, whose mounts show an anonymous device number
// (0:NN) instead of the block device's.
func MountPointsOf(mountinfoPath string, major, minor uint32, source string) ([]string, error) {
	if mountinfoPath == "" {
		mountinfoPath = "/proc/self/mountinfo"
	}
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for line := 1; sc.Scan(); line++ {
		// ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) < 5 {
			return nil, fmt.Errorf("%s:%d: %d fields, want at least 5", mountinfoPath, line, len(fields))
		}
		ma, mi, err := parseDevNum(fields[2])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", mountinfoPath, line, err)
		}
		if (ma == major && mi == minor) || (source != "" && mountSource(fields) == source) {
			points = append(points, unescapeOctal(fields[4]))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", mountinfoPath, err)
	}
	return points, nil
}

// mountSource returns the SOURCE field of a mountinfo line: the second
// field after the "-" separator.
func mountSource(fields []string) string {
	for i, f := range fields {
		if f == "-" && i+2 < len(fields) {
			return unescapeOctal(fields[i+2])
		}
	}
	return ""
}

// unescapeOctal decodes the \ooo escapes of show_mountinfo (space, tab,
// newline, backslash); anything else is copied as is.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] <= '3' && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
