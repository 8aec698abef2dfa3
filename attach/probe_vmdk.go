package attach

import (
	"errors"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/vmdk"
)

// isVMDK matches a hosted sparse VMDK (magic KDMV: monolithicSparse,
// streamOptimized) or a VMDK text descriptor ("# Disk DescriptorFile":
// monolithicFlat, twoGbMaxExtent*, vmfs, delta disks), whatever the file is
// called.
func isVMDK(head []byte) bool {
	return vmdk.IsSparse(head) || vmdk.IsDescriptor(head)
}

// openVMDK opens a VMDK disk, which opens its own extent and parent files
// relative to the descriptor. Writes go to the image unless -r is given;
// streamOptimized images are served read-only, with a warning.
func openVMDK(path string, opts OpenOptions) (sources.Source, error) {
	if opts.Offset != 0 || opts.SizeLimit != 0 {
		return nil, errors.New("--offset and --sizelimit do not apply to VMDK images (attach the raw file with file: or use --partition)")
	}
	return vmdk.Open(path, vmdk.Options{ReadOnly: opts.ReadOnly, CacheSize: opts.CacheSize,
		Named: namedFiles(path, opts), Budget: opts.Budget})
}
