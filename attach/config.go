package attach

import (
	"fmt"
	"path/filepath"
	"runtime"
	"time"
)

// Defaults for attach flags; the man page and --help quote them.
const (
	DefaultBlockSize = 512
	// DefaultTimeout 0 means the kernel never fails a request because the
	// server is slow: a local server is either working or dead, and death is
	// handled by the dead-connection timeout. (With several connections the
	// kernel still applies its own 30 s timer, and a request slower than
	// that is retried on another connection.)
	DefaultTimeout = 0
	// DefaultDeadTimeout is how long the kernel holds I/O after the server
	// process has died, waiting for a replacement connection (RECONFIGURE),
	// before it fails the I/O with EIO. It matches nbd-client's persist mode.
	DefaultDeadTimeout = 30 * time.Second
	// MaxConnections caps the default connection count: beyond 4 the
	// kernel's per-CPU queue mapping gains nothing on small machines.
	MaxConnections = 4
	// DefaultCacheSize is the memory for decoded data of compressed images
	// (xz, gzip, zstd), shared by all connections: a few dozen 4 MiB xz
	// blocks, or a handful of xz -9's 64 MiB dictionaries.
	DefaultCacheSize = 256 << 20
)

// DefaultConnections is the number of CPUs, at most MaxConnections.
func DefaultConnections() int {
	return min(runtime.NumCPU(), MaxConnections)
}

// Config is an attach request: the SOURCE and every attach flag. The parent
// passes it to the server process as JSON.
type Config struct {
	Source      string        `json:"source"`
	Index       int           `json:"index"` // -1: the kernel picks the first free device
	ReadOnly    bool          `json:"ro"`
	PartScan    bool          `json:"partscan"`
	BlockSize   int64         `json:"block_size"`
	Connections int           `json:"connections"`
	Timeout     time.Duration `json:"timeout"`
	DeadTimeout time.Duration `json:"dead_timeout"`
	Offset      int64         `json:"offset"`
	SizeLimit   int64         `json:"sizelimit"`
	DirectIO    bool          `json:"direct_io"`
	CacheSize   int64         `json:"cache_size,omitempty"` // 0: DefaultCacheSize
	// CacheDir is --cache-dir (absolute): fetched blocks of URLs kept on
	// disk too.
	CacheDir string `json:"cache_dir,omitempty"`
	// NoRestart: no supervisor; a server that dies leaves the device dead.
	NoRestart bool `json:"no_restart,omitempty"`
	// Driver is --driver: DriverNBD ("" too) or DriverUblk (driver.go).
	Driver string `json:"driver,omitempty"`
	// Filters are --filter specs (filters.Parse), the first nearest the
	// kernel.
	Filters []string `json:"filters,omitempty"`
	// Composite: --concat, --partitions and --partition (composite.go).
	Composite
	// Format is --format: the file's format as the user says it is, not
	// probed ("" probes).
	Format string `json:"format,omitempty"`
	// AllowPaths (--allow-path, absolute) and AllowDevices
	// (--allow-devices) widen where the files an image names may be.
	AllowPaths   []string `json:"allow_paths,omitempty"`
	AllowDevices bool     `json:"allow_devices,omitempty"`
	// MetadataLimit is --metadata-limit (0: sources.DefaultMetadataLimit);
	// SpillLimit is --spill-limit (0: the default).
	MetadataLimit int64 `json:"metadata_limit,omitempty"`
	SpillLimit    int64 `json:"spill_limit,omitempty"`
	// S3Profile (--s3-profile) and S3Endpoint (--s3-endpoint) configure
	// the requests of an s3:// SOURCE, over the AWS configuration.
	S3Profile  string `json:"s3_profile,omitempty"`
	S3Endpoint string `json:"s3_endpoint,omitempty"`
	// Files are the files served, as they were at attach (pinned): a
	// server started later refuses a path that leads elsewhere now.
	Files []FileIdentity `json:"files,omitempty"`
	// NoLock is --no-lock: take no image locks (lock.go).
	NoLock bool `json:"no_lock,omitempty"`
	// Progress, when set, is told how far the long work before the device
	// is ready is (JobIndex: the first attach of a gzip file), in the
	// process that calls Attach or Foreground; calls are serialized. It is
	// not part of the request the server keeps.
	Progress func(Progress) `json:"-"`
	// Autoclear is --autoclear: once the device is mounted or held, it
	// detaches when its last opener closes it (autoclear.go).
	Autoclear bool `json:"autoclear,omitempty"`
	// NbdTab names the nbdtab line that attached the device (nbdtab.go),
	// or is nil.
	NbdTab *TableEntry `json:"nbdtab,omitempty"`
}

// TableEntry names the line of an nbdtab file that attached a device
// (`nbdloop nbdtab attach`), so that the table's later runs know it.
type TableEntry struct {
	File string `json:"file"` // the table, an absolute path
	Line string `json:"line"` // the line's words, joined by single spaces
}

// NewConfig returns a Config with every default filled in.
func NewConfig(source string) Config {
	return Config{
		Source:      source,
		Index:       -1,
		BlockSize:   DefaultBlockSize,
		Connections: DefaultConnections(),
		Timeout:     DefaultTimeout,
		DeadTimeout: DefaultDeadTimeout,
	}
}

// Validate checks the flag values; errors name the flag and the allowed
// range.
func (c *Config) Validate() error {
	if err := c.validateDriver(); err != nil {
		return err
	}
	if c.BlockSize < 512 || c.BlockSize > 4096 || c.BlockSize&(c.BlockSize-1) != 0 {
		return fmt.Errorf("--block-size %d: must be a power of two from 512 to 4096", c.BlockSize)
	}
	if c.Connections < 1 || c.Connections > 64 {
		return fmt.Errorf("--connections %d: must be from 1 to 64", c.Connections)
	}
	if c.Timeout < 0 || c.Timeout%time.Second != 0 {
		return fmt.Errorf("--timeout %v: must be whole seconds, 0 or more (0: never time out)", c.Timeout)
	}
	if c.DeadTimeout < 0 || c.DeadTimeout%time.Second != 0 {
		return fmt.Errorf("--dead-timeout %v: must be whole seconds, 0 or more", c.DeadTimeout)
	}
	if c.Offset < 0 {
		return fmt.Errorf("--offset %d: must not be negative", c.Offset)
	}
	if c.SizeLimit < 0 {
		return fmt.Errorf("--sizelimit %d: must not be negative", c.SizeLimit)
	}
	if c.CacheSize < 0 {
		return fmt.Errorf("--cache-size %d: must not be negative", c.CacheSize)
	}
	if c.CacheDir != "" && !filepath.IsAbs(c.CacheDir) {
		return fmt.Errorf("--cache-dir %s: must be an absolute path", c.CacheDir)
	}
	if c.MetadataLimit < 0 {
		return fmt.Errorf("--metadata-limit %d: must not be negative", c.MetadataLimit)
	}
	if c.SpillLimit < 0 {
		return fmt.Errorf("--spill-limit %d: must not be negative", c.SpillLimit)
	}
	for _, d := range c.AllowPaths {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("--allow-path %s: must be an absolute path", d)
		}
	}
	if c.Format != "" {
		if err := checkFormatName(c.Format); err != nil {
			return err
		}
		if c.Layout != "" {
			return fmt.Errorf("--format %s: applies to one file (and --partition), not to --%s parts, which are probed each", c.Format, c.Layout)
		}
	}
	if c.Offset%512 != 0 {
		return fmt.Errorf("--offset %d: must be a multiple of 512 bytes", c.Offset)
	}
	spec, err := ParseSpec(c.Source)
	if err != nil {
		return err
	}
	if c.CacheDir != "" && !c.hasURL(spec) {
		return fmt.Errorf("%s: --cache-dir applies to http:// and https:// sources only (omit it)", c.Source)
	}
	if spec.Kind != KindFile && (c.Offset != 0 || c.SizeLimit != 0 || c.DirectIO) {
		return fmt.Errorf("%s: --offset, --sizelimit and --direct-io apply to files only", c.Source)
	}
	if spec.Kind == KindMemory && spec.Size < c.BlockSize {
		return fmt.Errorf("%s: smaller than one %d-byte block (give a larger size, e.g. memory:1G)", c.Source, c.BlockSize)
	}
	if r := c.SizeLimit % c.BlockSize; r != 0 {
		hint := fmt.Sprintf("--sizelimit %d", c.SizeLimit-r+c.BlockSize)
		if c.SizeLimit > c.BlockSize {
			hint = fmt.Sprintf("--sizelimit %d or %s", c.SizeLimit-r, hint)
		}
		return fmt.Errorf("--sizelimit %d: not a multiple of the %d-byte block size (use %s)", c.SizeLimit, c.BlockSize, hint)
	}
	if _, err := c.filterSpecs(); err != nil {
		return err
	}
	if err := c.validateComposite(); err != nil {
		return err
	}
	return nil
}

// Device describes an attached device, for `attach --json` and `list`.
type Device struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	// Driver is DriverUblk for a ublk device ("" for nbd).
	Driver      string   `json:"driver,omitempty"`
	Size        int64    `json:"size"`
	Source      string   `json:"source"`
	Format      string   `json:"format,omitempty"`
	RO          bool     `json:"ro"`
	PID         int      `json:"pid"`
	State       string   `json:"state"` // running, dead, foreign
	Connections int      `json:"connections"`
	BlockSize   int64    `json:"block_size,omitempty"`
	Backend     string   `json:"backend,omitempty"`
	Partitions  []string `json:"partitions,omitempty"`
	Mounts      []string `json:"mounts,omitempty"`
	Filters     []string `json:"filters,omitempty"` // --filter specs as given
	// Supervisor restarts the server when it dies (0: --no-restart).
	Supervisor int `json:"supervisor_pid,omitempty"`
	// Restarts counts the servers started after the first; LastExit says
	// how the previous one ended.
	Restarts int    `json:"restarts"`
	LastExit string `json:"last_exit,omitempty"`
	// Reason says why a dead device is dead, when nbdloop knows.
	Reason string `json:"reason,omitempty"`
	// Files are the files the device serves (and an exec: program), as
	// they were at attach: `list --associated` finds a file's devices by
	// their device and inode.
	Files []FileIdentity `json:"files,omitempty"`
	// Decoded is how far the background decode of a single-block image
	// is, in uncompressed bytes (absent when there is none).
	Decoded *Decoded `json:"decoded,omitempty"`
	// Autoclear: the device detaches when its last opener closes it, once
	// it has been mounted or held (--autoclear).
	Autoclear bool `json:"autoclear,omitempty"`
	// NbdTab is the nbdtab line that attached the device, if one did.
	NbdTab *TableEntry `json:"nbdtab,omitempty"`
}
