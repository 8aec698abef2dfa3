package attach

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nbdloop/nbdloop/sources"
)

// FormatNames are the values of --format: raw and the probe table's rows.
func FormatNames() []string {
	names := []string{"raw"}
	for _, fm := range probeTable {
		names = append(names, fm.name)
	}
	return names
}

// checkFormatName validates a --format value.
func checkFormatName(name string) error {
	for _, n := range FormatNames() {
		if n == name {
			return nil
		}
	}
	return fmt.Errorf("--format %s: unknown format (one of %s)", name, strings.Join(FormatNames(), ", "))
}

// probe returns the probe table's row that head matches, or nil for raw.
func probe(head []byte) *format {
	for i := range probeTable {
		if probeTable[i].match(head) {
			return &probeTable[i]
		}
	}
	return nil
}

// chooseFormat decides how the file at path, whose first bytes (of the
// window that -o and --sizelimit make) are head, is opened: the row of the
// probe table, or nil for raw. A format the user named (--format) is taken
// as given once head confirms it; a probe that differs from the format the
// device was attached with (a restart) is refused: a raw device whose guest
// wrote an image header must not come back as that image. With --offset,
// the file's own first bytes are probed too, and a container format there
// (qcow2, VMDK) refuses the window: its bytes are not a disk.
func chooseFormat(path string, head []byte, opts OpenOptions) (*format, error) {
	if opts.Offset != 0 && opts.Format == "" {
		if fm := probe(fileHead(path)); fm != nil && fm.openPath != nil {
			return nil, fileOptionsError(path, fm.name)
		}
	}
	if opts.Format != "" {
		if err := checkFormatName(opts.Format); err != nil {
			return nil, err
		}
		if opts.Format == "raw" {
			return nil, nil
		}
		fm := probe(head)
		if fm == nil || fm.name != opts.Format {
			what := "raw data"
			if fm != nil {
				what = "a " + fm.name + " image"
			}
			return nil, fmt.Errorf("%s: not a %s image: its first bytes are %s (omit --format to serve what it is)", path, opts.Format, what)
		}
		return fm, nil
	}
	fm := probe(head)
	name := "raw"
	if fm != nil {
		name = fm.name
	}
	if opts.ExpectFormat != "" && opts.ExpectFormat != name {
		return nil, fmt.Errorf("%s: now probes as %s, but it was attached as %s: not served (if the device's own first sector was rewritten, detach it and attach it with --format %s)",
			path, name, opts.ExpectFormat, opts.ExpectFormat)
	}
	return fm, nil
}

// fileHead returns the first probeLen bytes of the file at path (fewer if
// it is shorter or unreadable).
func fileHead(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	head := make([]byte, probeLen)
	n, _ := f.ReadAt(head, 0)
	return head[:n]
}

// namedFiles is where the files that the image at path names may be: its
// directory, and what --allow-path and --allow-devices add; nothing
// writable when the device is read-only.
func namedFiles(path string, opts OpenOptions) sources.NamedFiles {
	n := sources.Confine(path)
	if abs, err := filepath.Abs(path); err == nil {
		n.Dir = filepath.Dir(abs)
	}
	n.Allow, n.Devices, n.ReadOnly = opts.AllowPaths, opts.AllowDevices, opts.ReadOnly
	return n
}

// fileOptionsError refuses --offset, --sizelimit and --direct-io for an
// image format that opens its files itself (qcow2, VMDK).
func fileOptionsError(path, format string) error {
	return fmt.Errorf("%s: %s image: --offset, --sizelimit and --direct-io apply to raw and compressed files only (omit them)", path, format)
}
