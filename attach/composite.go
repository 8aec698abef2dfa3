package attach

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/partitioned"
)

// Composite is the part of an attach request (Config, OpenOptions) that
// builds a device from several SOURCEs (--concat, --partitions) or serves
// one partition of one (--partition).
type Composite struct {
	// Layout is "concat" or "partitions" for a device made of Sources, ""
	// otherwise.
	Layout string `json:"layout,omitempty"`
	// Sources are every SOURCE, in order; Config.Source is the first.
	Sources []string `json:"sources,omitempty"`
	// Table is the partition table of --partitions: "gpt" ("") or "mbr".
	Table string `json:"table,omitempty"`
	// Align is the partition alignment of --partitions in bytes; 0 means
	// partitioned.DefaultAlign.
	Align int64 `json:"align,omitempty"`
	// Types are --type overrides: "N=TYPE" or "FILE=TYPE".
	Types []string `json:"types,omitempty"`
	// ESP makes detected FAT partitions EFI system partitions.
	ESP bool `json:"esp,omitempty"`
	// Partition, when positive, serves only that partition of Source.
	Partition int `json:"partition,omitempty"`

	// partScan is Config.PartScan, for the hints of --partitions; Serve
	// passes it in OpenOptions (see Config.compositeOptions).
	partScan bool
}

// compositeOptions returns the Composite for OpenOptions: c's, with -P.
func (c *Config) compositeOptions() Composite {
	m := c.Composite
	m.partScan = c.PartScan
	return m
}

// Layouts of Composite.Layout.
const (
	LayoutConcat     = "concat"
	LayoutPartitions = "partitions"
)

// validateComposite checks the composite fields of c against each other
// and the rest of the request.
func (c *Config) validateComposite() error {
	m := c.Composite
	switch m.Layout {
	case "":
		if len(m.Sources) > 1 {
			return fmt.Errorf("%d SOURCEs need --concat or --partitions", len(m.Sources))
		}
	case LayoutConcat, LayoutPartitions:
		if len(m.Sources) == 0 || m.Sources[0] != c.Source {
			return fmt.Errorf("--%s: Sources must list every SOURCE, starting with %q", m.Layout, c.Source)
		}
		for _, s := range m.Sources {
			if _, err := ParseSpec(s); err != nil {
				return err
			}
		}
		if c.Offset != 0 || c.SizeLimit != 0 {
			return fmt.Errorf("--%s: --offset and --sizelimit apply to a single SOURCE", m.Layout)
		}
		if m.Partition != 0 {
			return fmt.Errorf("--%s: --partition applies to a single SOURCE", m.Layout)
		}
	default:
		return fmt.Errorf("unknown layout %q (use concat or partitions)", m.Layout)
	}
	if m.Layout != LayoutPartitions && (m.Table != "" || m.Align != 0 || len(m.Types) > 0 || m.ESP) {
		return errors.New("--table, --align, --type and --esp apply to --partitions")
	}
	if m.Partition < 0 {
		return fmt.Errorf("--partition %d: must be 1 or more", m.Partition)
	}
	if m.Partition > 0 && (c.Offset != 0 || c.SizeLimit != 0) {
		return errors.New("--partition and --offset/--sizelimit exclude each other (--partition finds the offset and size)")
	}
	if m.Layout != LayoutPartitions {
		return nil
	}
	if m.Table != "" && m.Table != "gpt" && m.Table != "mbr" {
		return fmt.Errorf("--table %q: use gpt or mbr", m.Table)
	}
	if a := m.Align; a != 0 && (a < c.BlockSize || a > partitioned.MaxAlign || a&(a-1) != 0) {
		return fmt.Errorf("--align %d: must be a power of two from the block size (%d) to 1G", a, c.BlockSize)
	}
	_, err := m.partTypes()
	return err
}

// partitionNumbers returns the number each SOURCE's partition gets.
func (m Composite) partitionNumbers() []int {
	n := len(m.Sources)
	nums := make([]int, n)
	for i := range nums {
		nums[i] = i + 1
		if m.Table == "mbr" && n > 4 && i >= 3 {
			nums[i] = i + 2 // 4 is the extended partition
		}
	}
	return nums
}

// partTypes parses the --type overrides into one entry per SOURCE (nil:
// detect).
func (m Composite) partTypes() ([]*partitioned.PartType, error) {
	types := make([]*partitioned.PartType, len(m.Sources))
	nums := m.partitionNumbers()
	for _, arg := range m.Types {
		i := strings.LastIndexByte(arg, '=')
		if i <= 0 {
			return nil, fmt.Errorf("--type %q: want N=TYPE or FILE=TYPE (e.g. 2=swap)", arg)
		}
		key, name := arg[:i], arg[i+1:]
		t, err := partitioned.ParseType(name)
		if err != nil {
			return nil, fmt.Errorf("--type %s: %v", arg, err)
		}
		idx, err := m.typeTarget(key, nums)
		if err != nil {
			return nil, fmt.Errorf("--type %s: %w", arg, err)
		}
		if types[idx] != nil {
			return nil, fmt.Errorf("--type %s: partition %d has a type already", arg, nums[idx])
		}
		types[idx] = &t
	}
	return types, nil
}

// typeTarget returns the index of the SOURCE that a --type key names: a
// partition number, or a SOURCE as given or by its base name.
func (m Composite) typeTarget(key string, nums []int) (int, error) {
	if n, err := strconv.Atoi(key); err == nil {
		for i, num := range nums {
			if num == n {
				return i, nil
			}
		}
		list := make([]string, len(nums))
		for i, num := range nums {
			list[i] = strconv.Itoa(num)
		}
		extra := ""
		if n == 4 && m.Table == "mbr" && len(nums) > 4 {
			extra = "; 4 is the extended partition"
		}
		return 0, fmt.Errorf("no partition %d (the disk will have %s%s)", n, strings.Join(list, ", "), extra)
	}
	found := -1
	for i, s := range m.Sources {
		if s == key || filepath.Base(strings.TrimPrefix(s, "file:")) == key {
			if found >= 0 {
				return 0, fmt.Errorf("%s names more than one SOURCE (give the partition number)", key)
			}
			found = i
		}
	}
	if found < 0 {
		return 0, fmt.Errorf("%s is neither a partition number nor one of the SOURCEs", key)
	}
	return found, nil
}

// openComposite opens a --concat or --partitions device, or the
// --partition view of spec.
func openComposite(spec Spec, opts OpenOptions) (*Opened, error) {
	if opts.Layout == "" {
		return openPartitionView(spec, opts)
	}
	parts, err := openParts(opts)
	if err != nil {
		return nil, err
	}
	var op *Opened
	if opts.Layout == LayoutConcat {
		op, err = buildConcat(parts, opts)
	} else {
		op, err = buildPartitions(parts, opts)
	}
	if err != nil {
		for _, p := range parts {
			p.Source.Close()
		}
		return nil, err
	}
	var warns []string
	for _, p := range parts {
		warns = append(warns, p.Warnings...)
	}
	op.Warnings = append(warns, op.Warnings...)
	return op, nil
}

// part is one opened SOURCE of a composite device.
type part struct {
	*Opened
	arg      string // the SOURCE as given
	roReason string // why a part opened read-only without -r, if it did
}

// openParts opens every SOURCE of opts. Files need not be a multiple of the
// block size. Without -r, a file that cannot be opened for writing
// (permissions, a read-only file system) is opened read-only; what that
// means is the layout's business. The same file twice is refused unless
// read-only: writes through one place would change the other.
func openParts(opts OpenOptions) ([]part, error) {
	var parts []part
	fail := func(err error) ([]part, error) {
		for _, p := range parts {
			p.Source.Close()
		}
		return nil, err
	}
	seen := map[fileID]string{}
	for _, arg := range opts.Sources {
		spec, err := ParseSpec(arg)
		if err != nil {
			return fail(err)
		}
		sub := OpenOptions{ReadOnly: opts.ReadOnly, BlockSize: 1, DirectIO: opts.DirectIO, CacheSize: opts.CacheSize,
			AllowPaths: opts.AllowPaths, AllowDevices: opts.AllowDevices, Budget: opts.Budget, SpillLimit: opts.SpillLimit, Logf: opts.Logf,
			URLDeadline: opts.URLDeadline, S3Profile: opts.S3Profile, S3Endpoint: opts.S3Endpoint, CacheDir: opts.CacheDir}
		p := part{arg: arg}
		if spec.Kind == KindFile {
			st, err := os.Stat(spec.Path)
			if err == nil && st.Mode().IsRegular() && st.Size() == 0 {
				return fail(fmt.Errorf("%s: empty file: a %s part needs at least one byte (give it a size: truncate -s 1G %s, or make a file system in it)",
					spec.Path, opts.Layout, spec.Path))
			}
			if id, ok := statID(st, err); ok && !opts.ReadOnly {
				if prev, dup := seen[id]; dup {
					return fail(fmt.Errorf("%s and %s are the same file: writes through one would change the other (attach with -r to use a file twice)", prev, arg))
				}
				seen[id] = arg
			}
		}
		p.Opened, err = OpenSource(spec, sub)
		if err != nil && !opts.ReadOnly && (errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)) {
			sub.ReadOnly = true
			p.roReason = "cannot be opened for writing: permission denied"
			if errors.Is(err, syscall.EROFS) {
				p.roReason = "is on a read-only file system"
			}
			p.Opened, err = OpenSource(spec, sub)
		}
		if err != nil {
			return fail(err)
		}
		if p.roReason == "" && !opts.ReadOnly && p.Source.Caps().ReadOnly {
			p.roReason = "is a read-only format (" + p.Format + ")"
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// fileID identifies a file: two paths with the same fileID are one file.
type fileID struct{ dev, ino uint64 }

// statID returns the fileID of a stat result.
func statID(st fs.FileInfo, err error) (fileID, bool) {
	if err != nil {
		return fileID{}, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{uint64(sys.Dev), sys.Ino}, true
}

// compositeDesc is the SOURCE column of `list`: PREFIX:A+B+C, shortened in
// the middle when there are many files.
func compositeDesc(prefix string, parts []part) string {
	var names []string
	for i, p := range parts {
		if len(parts) > 5 && i >= 2 && i < len(parts)-1 {
			if i == 2 {
				names = append(names, fmt.Sprintf("...(%d more)...", len(parts)-3))
			}
			continue
		}
		names = append(names, p.Desc)
	}
	return prefix + ":" + strings.Join(names, "+")
}

func buildConcat(parts []part, opts OpenOptions) (*Opened, error) {
	srcs := make([]sources.Source, len(parts))
	names := make([]string, len(parts))
	for i, p := range parts {
		srcs[i], names[i] = p.Source, p.arg
	}
	c, err := sources.NewConcat(srcs, sources.ConcatOptions{Names: names, Align: opts.BlockSize})
	if errors.Is(err, sources.ErrMixedReadOnly) {
		ro, rw := "", ""
		for _, p := range parts {
			switch {
			case p.Source.Caps().ReadOnly && ro == "":
				ro = p.arg + " " + p.roReason
			case !p.Source.Caps().ReadOnly && rw == "":
				rw = p.arg
			}
		}
		return nil, fmt.Errorf("concat: %s, but %s is writable: a file system across them would fail on some of its writes (attach with -r, or make every file writable)", ro, rw)
	}
	if err != nil {
		return nil, fmt.Errorf("concat: %w", err)
	}
	op := &Opened{Source: c, Desc: compositeDesc("concat", parts), Format: "concat"}
	if pad := c.Padding(); pad > 0 {
		op.Warnings = append(op.Warnings, fmt.Sprintf(
			"concat: the files add up to %d bytes, not a multiple of %d: the device ends with %d bytes of zeros that cannot store data (writes there fail with EIO)",
			c.Size()-pad, opts.BlockSize, pad))
	}
	if parts[0].roReason != "" && !opts.ReadOnly {
		op.Warnings = append(op.Warnings, fmt.Sprintf("concat: every file is read-only (%s %s): attached read-only", parts[0].arg, parts[0].roReason))
	}
	return op, nil
}

// partitionName is the GPT partition name for a SOURCE: the file's base
// name without its extension.
func partitionName(p part) string {
	if strings.HasPrefix(p.arg, "memory:") {
		return p.arg
	}
	base := filepath.Base(strings.TrimPrefix(p.arg, "file:"))
	if ext := filepath.Ext(base); ext != "" && ext != base {
		base = strings.TrimSuffix(base, ext)
	}
	return base
}

// MaxKernelPartitions is how many partitions Linux shows of one disk
// (DISK_MAX_PARTS is 256, minor 0 being the disk).
const MaxKernelPartitions = 255

// maxPartParam is the nbd driver's max_part parameter file.
var maxPartParam = "/sys/module/nbd/parameters/max_part"

func buildPartitions(parts []part, opts OpenOptions) (*Opened, error) {
	types, err := opts.partTypes()
	if err != nil {
		return nil, err
	}
	pps := make([]partitioned.Part, len(parts))
	for i, p := range parts {
		pps[i] = partitioned.Part{Source: p.Source, Name: partitionName(p), ID: p.Desc, Type: types[i]}
	}
	d, err := partitioned.New(pps, partitioned.Options{
		Table: opts.Table, Align: opts.Align, SectorSize: opts.BlockSize, ESP: opts.ESP,
	})
	if errors.Is(err, partitioned.ErrTooLarge) {
		var total int64
		for _, p := range parts {
			total += p.Source.Size()
		}
		return nil, fmt.Errorf("partitions: the files add up to %s, too large for an MBR, which addresses at most %s with %d-byte sectors (use --table gpt)",
			bytesize.Format(total), bytesize.Format(int64(1<<32)*opts.BlockSize), opts.BlockSize)
	}
	if err != nil {
		return nil, fmt.Errorf("partitions: %v", err)
	}
	op := &Opened{Source: d, Desc: compositeDesc(d.Table(), parts), Format: d.Table()}
	for i, pt := range d.Partitions() {
		if parts[i].roReason != "" && !opts.ReadOnly {
			op.Warnings = append(op.Warnings, fmt.Sprintf("%s %s: partition %d is read-only (writes to it fail with EPERM; mount it with -o ro)",
				parts[i].arg, parts[i].roReason, pt.Number))
		}
	}
	if d.Caps().ReadOnly && !opts.ReadOnly {
		op.Warnings = append(op.Warnings, "partitions: every file is read-only: attached read-only")
	}
	op.Warnings = append(op.Warnings, partitionHints(d, opts.partScan)...)
	return op, nil
}

// partitionHints says when the kernel will not show some or all of d's
// partitions. With max_part=0 the nbd driver does not ask the kernel to
// scan a new device for partitions, so they appear only on an explicit
// rescan (BLKRRPART, which -P issues); the kernel itself shows at most 255
// partitions of a disk, whatever max_part says (partitions past the
// driver's own minors get extended device numbers).
func partitionHints(d *partitioned.Disk, partScan bool) []string {
	var hints []string
	parts := d.Partitions()
	if b, err := os.ReadFile(maxPartParam); err == nil && strings.TrimSpace(string(b)) == "0" && !partScan {
		hints = append(hints, "partitions: warning: the nbd driver was loaded with max_part=0, so the kernel does not look for partitions on nbd devices by itself "+
			"(attach with -P, which makes it; or load the driver with max_part=16: modprobe -r nbd && modprobe nbd max_part=16, or boot with nbd.max_part=16)")
	}
	if last := parts[len(parts)-1].Number; last > MaxKernelPartitions {
		hints = append(hints, fmt.Sprintf("partitions: warning: Linux shows at most %d partitions of a disk: partitions %d to %d will have no device node",
			MaxKernelPartitions, MaxKernelPartitions+1, last))
	}
	return hints
}

// openPartitionView opens spec and serves only partition opts.Partition of
// it.
func openPartitionView(spec Spec, opts OpenOptions) (*Opened, error) {
	n := opts.Partition
	sub := opts
	sub.Composite = Composite{}
	sub.BlockSize = 1 // the image need not end on a sector; the partition must
	op, err := OpenSource(spec, sub)
	if err != nil {
		return nil, err
	}
	name := spec.String()
	w, p, t, err := partitioned.OpenPartition(op.Source, n, opts.BlockSize)
	var npe *partitioned.NoPartitionError
	switch {
	case errors.As(err, &npe) && len(t.Partitions) > 0:
		err = fmt.Errorf("%s: no partition %d: its %s has %s (--partition %d)", name, n, strings.ToUpper(t.Kind), t.Numbers(), t.Partitions[0].Number)
	case errors.As(err, &npe):
		err = fmt.Errorf("%s: no partition %d: its %s is empty", name, n, strings.ToUpper(t.Kind))
	case errors.Is(err, partitioned.ErrNoTable):
		err = fmt.Errorf("%s: no partition table (MBR or GPT) to find partition %d in (for a byte range use --offset and --sizelimit)", name, n)
	case err != nil:
		err = fmt.Errorf("%s: %v", name, err)
	case p.Size%opts.BlockSize != 0:
		err = fmt.Errorf("%s: partition %d (%d bytes at %d) is not whole %d-byte blocks (attach it with -b 512)", name, n, p.Size, p.Start, opts.BlockSize)
	}
	if err != nil {
		op.Source.Close()
		return nil, err
	}
	res := &Opened{Source: w, Desc: fmt.Sprintf("%s:p%d", op.Desc, n), Format: op.Format, Warnings: op.Warnings, Pin: op.Pin}
	for _, warn := range t.Warnings {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s: warning: %s", name, warn))
	}
	return res, nil
}
