package attach

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/httpsrc"
)

// SourceKind is what a SOURCE names.
type SourceKind string

// The kinds of SOURCE.
const (
	KindFile   SourceKind = "file"   // a file or block device (PATH, file:PATH)
	KindMemory SourceKind = "memory" // memory:SIZE
	KindExec   SourceKind = "exec"   // exec:PATH[,OPTIONS]
	KindNBD    SourceKind = "nbd"    // nbd[s]://HOST[:PORT]/EXPORT, nbd[s]+unix:///EXPORT?socket=PATH
	KindURL    SourceKind = "url"    // http://..., https://... or s3://BUCKET/KEY
)

// Spec is a parsed SOURCE argument.
type Spec struct {
	Kind SourceKind
	Path string // file, exec; url: the URL
	Size int64  // memory
	// Options are exec's options as written, after the path's comma.
	Options string
	// Clamped is set when a memory size above 2^63-1 was clamped to it.
	Clamped bool
	// Remote is the server and export of an nbd:// SOURCE (remote.go).
	Remote nbd.URI
}

// ParseSpec parses a SOURCE argument (the syntax is in the attach command's help).
func ParseSpec(s string) (Spec, error) {
	switch {
	case s == "":
		return Spec{}, errors.New("no source given")
	case strings.HasPrefix(s, "memory:"):
		size, err := bytesize.Parse(strings.TrimPrefix(s, "memory:"))
		clamped := false
		if errors.Is(err, bytesize.ErrTooLarge) {
			size, err, clamped = math.MaxInt64, nil, true
		}
		if err != nil {
			return Spec{}, fmt.Errorf("%s: %w", s, err)
		}
		if size <= 0 {
			return Spec{}, fmt.Errorf("%s: size must be greater than 0 (e.g. memory:1G)", s)
		}
		return Spec{Kind: KindMemory, Size: size, Clamped: clamped}, nil
	case strings.HasPrefix(s, "exec:"):
		return parseExecSpec(s)
	case strings.HasPrefix(s, "file:"):
		path := strings.TrimPrefix(s, "file:")
		if path == "" {
			return Spec{}, fmt.Errorf("%s: no path given (e.g. file:disk.img)", s)
		}
		return Spec{Kind: KindFile, Path: path}, nil
	}
	if nbd.IsURI(s) {
		return parseRemoteSpec(s)
	}
	if IsBucketURL(s) {
		return parseBucketSpec(s)
	}
	if scheme, ok := urlScheme(s); ok {
		if scheme = strings.ToLower(scheme); scheme == "http" || scheme == "https" || scheme == "s3" {
			return parseURLSpec(s)
		}
		return Spec{}, fmt.Errorf("%s: %s:// URLs are not supported (SOURCE is a PATH, file:PATH, memory:SIZE, exec:PATH, an http(s):// URL, s3://BUCKET/KEY, nbd[s]://HOST[:PORT]/EXPORT or nbd[s]+unix:///EXPORT?socket=PATH)", s, scheme)
	}
	return Spec{Kind: KindFile, Path: s}, nil
}

// urlScheme returns the scheme of a SOURCE written as a URL
// (scheme://...), which would otherwise be taken for a relative path.
func urlScheme(s string) (string, bool) {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return "", false
	}
	for i, r := range scheme {
		letter := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
		if !letter && (i == 0 || !('0' <= r && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return "", false
		}
	}
	return scheme, true
}

// String renders the spec in the form ParseSpec reads.
func (s Spec) String() string {
	if s.Kind == KindMemory {
		return fmt.Sprintf("memory:%d", s.Size)
	}
	if s.Kind == KindExec {
		return execSpecString(s)
	}
	if s.Kind == KindNBD {
		return s.Remote.String()
	}
	if s.Kind == KindURL || s.Kind == KindBucket {
		return s.Path
	}
	if _, url := urlScheme(s.Path); url || strings.HasPrefix(s.Path, "memory:") || strings.HasPrefix(s.Path, "file:") || strings.HasPrefix(s.Path, "exec:") {
		return "file:" + s.Path
	}
	return s.Path
}

// OpenOptions are the attach flags that shape how a source is opened.
type OpenOptions struct {
	ReadOnly  bool
	BlockSize int64
	Offset    int64
	SizeLimit int64
	DirectIO  bool
	CacheSize int64 // decode cache of compressed images (0: the default)
	// CacheDir keeps the fetched blocks of URLs in files of this
	// directory too, within CacheSize for all the objects of the device
	// together (--cache-dir; "": memory only).
	CacheDir string
	// diskBudget is the room in CacheDir left to the device's objects
	// (made by openURL for the image and shared with what it names).
	diskBudget *httpsrc.DiskBudget
	// MemFile is the memfd of a memory: device handed down by the
	// supervisor (memory.go); nil: a new one.
	MemFile *os.File
	// Sequential: the caller reads the source once, in order (pack), so
	// a compressed image that is one big block is decoded as it is read
	// rather than into a temporary file.
	Sequential bool
	Composite  // --concat, --partitions, --partition (composite.go)

	// Format is the format the user named (--format): the file is opened
	// as that, without probing. "" probes.
	Format string
	// ExpectFormat is the format the device was attached with, for a
	// restart: a file that now probes as another format is refused.
	ExpectFormat string
	// AllowPaths are directories beyond an image's own beneath which the
	// files it names (backing files, extents, parents) may be
	// (--allow-path); AllowDevices lets them be block devices.
	AllowPaths   []string
	AllowDevices bool
	// MetadataLimit bounds the memory of the images' metadata
	// (--metadata-limit; 0: sources.DefaultMetadataLimit), charged to
	// Budget, one per device (nil: OpenSource makes it).
	MetadataLimit int64
	Budget        *sources.Budget
	// SpillLimit bounds the temporary file that a compressed image of
	// one big block is decoded into (--spill-limit; 0: the default).
	SpillLimit int64
	// Logf receives the lines a device's log gets from its sources (the
	// first-sector guard's refusals, a remote's lost connections); nil
	// discards them.
	Logf func(format string, args ...any)
	// URLDeadline bounds each read of a URL's object, retries included
	// (0: httpsrc.DefaultDeadline); ExpectPin is the version of the object
	// the device was attached with (a restart: Opened.Pin), "" for any.
	URLDeadline time.Duration
	ExpectPin   string
	// S3Profile and S3Endpoint configure the requests of an s3:// SOURCE
	// (s3src.Options).
	S3Profile, S3Endpoint string
	// Progress, when set, is told how far the long jobs of compressed
	// images are: a pass over a gzip file while it is opened (JobIndex),
	// the background decode of a single-block xz or zstd file (JobDecode,
	// called from the decoding goroutine until it ends).
	Progress func(Progress)
	// RemoteRetry is how long requests to an nbd:// source wait for a
	// lost connection to come back (0: the nbd/remote default).
	RemoteRetry time.Duration
}

// progressOf returns the format's progress callback for job on the file
// what, or nil when opts has no Progress.
func (opts OpenOptions) progressOf(job, what string) func(done, total int64) {
	if opts.Progress == nil {
		return nil
	}
	return func(done, total int64) {
		opts.Progress(Progress{Job: job, What: what, Done: done, Total: total})
	}
}

// format is one row of the probe table: formats are recognised by their
// first bytes, in table order, and raw is the fallback. Later formats add
// rows here, the composition root, so that their packages need not know each
// other.
type format struct {
	name  string
	match func(head []byte) bool
	open  func(f namedSource, opts OpenOptions) (sources.Source, error)
	// openPath, when set, is used instead of open for formats that manage
	// their own files (images that grow, backing files and extents found
	// relative to the image): the probe's File is closed first.
	openPath func(path string, opts OpenOptions) (sources.Source, error)
	// openURL, when set, opens such a format from a URL's object,
	// read-only, finding its files next to the URL.
	openURL func(obj *httpsrc.Source, url string, opts OpenOptions) (sources.Source, error)
	// readOnly formats are served read-only whatever -r says, and their
	// file is never opened for writing (see probe.go).
	readOnly bool
	// diesWithServer says what of a writable image lives only in the
	// server process until a flush, so that a new server after a crash
	// would serve it wrong ("": nothing; the server can be restarted).
	diesWithServer string
}

// namedSource is what a format opens from: a file (*sources.File) or a
// URL's object (*httpsrc.Source); Name names it in progress reports.
type namedSource interface {
	sources.Source
	Name() string
}

var probeTable = []format{
	{name: "vmdk", match: isVMDK, openPath: openVMDK, openURL: openVMDKURL},
	{name: "qcow2", match: isQcow2, openPath: openQcow2, openURL: openQcow2URL,
		diesWithServer: "qcow2 keeps new cluster mappings in the server until a flush, and they died with it"},
	{name: "xz", match: isXZ, open: openXZ, readOnly: true},
	{name: "gzip", match: isGzip, open: openGzip, readOnly: true},
	{name: "zstd", match: isZstd, open: openZstd, readOnly: true},
}

// Opened is a source ready to serve, with what to tell the user about it.
type Opened struct {
	Source   sources.Source
	Desc     string   // for `list`: the absolute path, or memory:SIZE
	Format   string   // "raw", "memory", ...
	Warnings []string // one line each, printed by attach
	// Pin names the version of a URL's object that is served (see
	// httpsrc.Object.Pin), "" for other sources: a restart serves only
	// that version.
	Pin string
}

// OpenSource opens spec and checks that its size suits a block device of
// opts.BlockSize bytes per sector. Errors name the source and say how to fix
// the problem.
func OpenSource(spec Spec, opts OpenOptions) (*Opened, error) {
	if opts.Budget == nil {
		opts.Budget = sources.NewBudget(opts.MetadataLimit)
	}
	if opts.Format != "" && spec.Kind != KindFile && spec.Kind != KindURL {
		return nil, fmt.Errorf("%s: --format applies to files and URLs only (omit it)", spec)
	}
	if opts.Layout != "" || opts.Partition > 0 {
		// The parts are probed each; the device's format is the layout's.
		opts.ExpectFormat = ""
		return openComposite(spec, opts)
	}
	switch spec.Kind {
	case KindMemory:
		return openMemory(spec, opts)
	case KindExec:
		return openExec(spec, opts)
	case KindNBD:
		return openRemote(spec, opts)
	case KindURL:
		return openURL(spec, opts)
	case KindBucket:
		return openBucket(spec, opts)
	}
	return openFileSource(spec.Path, opts)
}

// openFileSource opens the file at path as the format it is given or
// probes as, else as raw data.
func openFileSource(path string, opts OpenOptions) (*Opened, error) {
	fopts := sources.FileOptions{
		ReadOnly: opts.ReadOnly, Offset: opts.Offset, SizeLimit: opts.SizeLimit, DirectIO: opts.DirectIO,
	}
	f, err := sources.OpenFile(path, fopts)
	if err != nil && !opts.ReadOnly {
		f, err = openReadOnlyFormat(path, fopts, err)
	}
	if errors.Is(err, sources.ErrEmpty) {
		return nil, emptyError(path, opts)
	}
	if err != nil {
		return nil, openError(path, err)
	}
	head, err := readHead(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	desc := path
	if abs, err := absPath(path); err == nil {
		desc = abs
	}
	fm, err := chooseFormat(path, head, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	if fm != nil {
		return openFormat(f, *fm, path, desc, fopts, opts)
	}
	return openRaw(f, path, desc, opts)
}

// readHead reads the first probeLen bytes of f (fewer if it is smaller).
func readHead(f *sources.File, path string) ([]byte, error) {
	head := make([]byte, probeLen)
	n, err := f.ReadAt(head[:min(int64(len(head)), f.Size())], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: reading the first bytes: %w", path, err)
	}
	return head[:n], nil
}

// openFormat opens f, the file at path, as format fm; f is closed on
// failure or when fm opens the path itself.
func openFormat(f *sources.File, fm format, path, desc string, fopts sources.FileOptions, opts OpenOptions) (*Opened, error) {
	f, err := reopenReadOnly(f, fm, path, fopts)
	if err != nil {
		return nil, openError(path, err)
	}
	var src sources.Source
	if fm.openPath != nil {
		f.Close()
		if opts.DirectIO || opts.Offset != 0 || opts.SizeLimit != 0 {
			// These open the image file themselves, the whole of it and
			// through the page cache.
			return nil, fileOptionsError(path, fm.name)
		}
		src, err = fm.openPath(path, opts)
	} else if src, err = fm.open(f, opts); err != nil {
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", path, fm.name, err)
	}
	return probed(path, desc, fm, src, opts)
}

// openRaw serves f, the file at path, as raw data: behind the probe guard
// unless it is read-only or the user said --format raw.
func openRaw(f *sources.File, path, desc string, opts OpenOptions) (*Opened, error) {
	bs := opts.BlockSize
	if r := f.Size() % bs; r != 0 {
		f.Close()
		what := "size"
		if opts.Offset != 0 || opts.SizeLimit != 0 {
			what = "size of the window"
		}
		less := ""
		if f.Size() > bs {
			less = fmt.Sprintf(", or serve less: --sizelimit %d", f.Size()-r)
		}
		return nil, fmt.Errorf("%s: %s %d is not a multiple of %d bytes (round it up: truncate -s %%%d %s%s)",
			path, what, f.Size(), bs, bs, path, less)
	}
	if opts.Format == "raw" || f.Caps().ReadOnly {
		return &Opened{Source: f, Desc: desc, Format: "raw"}, nil
	}
	return &Opened{Source: newProbeGuard(f, path, opts.Logf), Desc: desc, Format: "raw"}, nil
}

// openError turns an error from opening a file into one line that names
// the path once and says what to do.
func openError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	hint := ""
	switch {
	case errors.Is(err, fs.ErrNotExist):
		hint = " (check the path)"
	case errors.Is(err, fs.ErrPermission):
		hint = " (check its permissions, or attach it read-only: -r)"
	case errors.Is(err, syscall.EISDIR):
		hint = " (give a file or a block device)"
	case errors.Is(err, syscall.EROFS):
		hint = " (attach it read-only: -r)"
	case errors.Is(err, sources.ErrDirectIO):
		hint = " (omit --direct-io)"
	}
	return fmt.Errorf("%s: %w%s", path, err, hint)
}

// emptyError says why the file at path leaves no bytes to serve: it is
// empty, or --offset is at or past its end (where a qcow2 or VMDK image
// is told that --offset does not apply to it).
func emptyError(path string, opts OpenOptions) error {
	size := fileSize(path)
	switch {
	case size == 0 && opts.Offset == 0:
		return fmt.Errorf("%s: empty, no bytes to serve (truncate it to the size wanted, e.g. truncate -s 1G %s)", path, path)
	case size == 0:
		return fmt.Errorf("%s: empty, no bytes at --offset %d (truncate it to the size wanted, past the offset: truncate -s SIZE %s)", path, opts.Offset, path)
	}
	if fm := probe(fileHead(path)); fm != nil && fm.openPath != nil && opts.Format == "" {
		return fileOptionsError(path, fm.name)
	}
	if size < opts.Offset {
		return fmt.Errorf("%s: the file (%d bytes) is smaller than --offset %d (give an offset inside the file)", path, size, opts.Offset)
	}
	return fmt.Errorf("%s: the file (%d bytes) ends at --offset %d (give an offset inside the file)", path, size, opts.Offset)
}

// fileSize returns the size of the file or block device at path, or -1.
func fileSize(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return -1
	}
	return n
}

func absPath(p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return wd + "/" + p, nil
}

// readOnly makes a writable source refuse writes, for `attach -r` on sources
// that have no read-only mode of their own (memory).
type readOnly struct{ next sources.Source }

func (r readOnly) ReadAt(p []byte, off int64) (int, error) { return r.next.ReadAt(p, off) }
func (r readOnly) WriteAt([]byte, int64) (int, error)      { return 0, sources.ErrReadOnly }
func (r readOnly) Size() int64                             { return r.next.Size() }
func (r readOnly) Flush() error                            { return nil }
func (r readOnly) Trim(int64, int64) error                 { return sources.ErrReadOnly }
func (r readOnly) Zero(int64, int64, bool) error           { return sources.ErrReadOnly }
func (r readOnly) Close() error                            { return r.next.Close() }
func (r readOnly) Extents(off, length int64, fn func(sources.Extent) bool) error {
	return sources.Extents(r.next, off, length, fn)
}
func (r readOnly) Caps() sources.Caps {
	c := r.next.Caps()
	return sources.Caps{ReadOnly: true, Parallel: c.Parallel, Rotational: c.Rotational}
}
