package attach

import (
	"errors"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/httpsrc"
	"github.com/nbdloop/nbdloop/sources/s3src"
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

// openVMDKURL opens a VMDK disk from a URL's object, read-only: a hosted
// sparse file (monolithicSparse, streamOptimized), or a descriptor whose
// extents and parent are read by URL too, named relative to it and
// beneath its directory on the same server (in the same bucket for an
// s3:// URL), their fetched blocks in the
// memory of obj's Pool (and kept in --cache-dir likewise).
func openVMDKURL(obj *httpsrc.Source, url string, opts OpenOptions) (sources.Source, error) {
	if opts.Offset != 0 || opts.SizeLimit != 0 {
		return nil, errors.New("--offset and --sizelimit do not apply to VMDK images (use --partition)")
	}
	fetch := httpsrc.Options{Pool: obj.Pool(), Deadline: opts.URLDeadline, Logf: opts.Logf,
		CacheDir: opts.CacheDir, DiskCacheSize: opts.CacheSize, DiskBudget: opts.diskBudget}
	var named vmdk.Files = httpsrc.Named{Options: fetch}
	if s3src.IsURL(url) {
		named = s3src.Named(s3src.Options{Fetch: fetch, Profile: opts.S3Profile, Endpoint: opts.S3Endpoint})
	}
	return vmdk.OpenSource(obj, url, named, vmdk.Options{CacheSize: opts.CacheSize, Budget: opts.Budget})
}
