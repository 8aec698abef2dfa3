package attach

import (
	"bytes"
	"errors"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/httpsrc"
	"github.com/nbdloop/nbdloop/sources/qcow2"
	"github.com/nbdloop/nbdloop/sources/s3src"
)

// isQcow2 matches the qcow2 magic "QFI\xfb" followed by version 2 or 3.
// Other versions fall through to qcow2.Open's "unsupported version" error
// only if they carry the magic: a raw disk that starts with these bytes is
// unlikely enough (qemu probes the same way).
func isQcow2(head []byte) bool {
	return len(head) >= 8 && bytes.HasPrefix(head, []byte{'Q', 'F', 'I', 0xfb})
}

// openQcow2URL opens a qcow2 image from a URL's object, read-only, with
// its backing chain read by URL too, next to it: the fetched blocks of
// each backing object in the memory of obj's Pool.
func openQcow2URL(obj *httpsrc.Source, url string, opts OpenOptions) (sources.Source, error) {
	if opts.Offset != 0 || opts.SizeLimit != 0 {
		return nil, errors.New("--offset and --sizelimit do not apply to qcow2 images (convert the window to raw first: qemu-img convert -O raw)")
	}
	fetch := httpsrc.Options{Pool: obj.Pool(), Deadline: opts.URLDeadline, Logf: opts.Logf,
		CacheDir: opts.CacheDir, DiskCacheSize: opts.CacheSize, DiskBudget: opts.diskBudget}
	var named qcow2.Files = httpsrc.Named{Options: fetch}
	if s3src.IsURL(url) {
		named = s3src.Named(s3src.Options{Fetch: fetch, Profile: opts.S3Profile, Endpoint: opts.S3Endpoint})
	}
	return qcow2.OpenSource(obj, url, named, qcow2.Options{CacheSize: opts.CacheSize, Budget: opts.Budget})
}

// openQcow2 opens a qcow2 image by path: it opens its backing chain itself,
// relative to the image's directory, and writes in place unless -r.
func openQcow2(path string, opts OpenOptions) (sources.Source, error) {
	if opts.Offset != 0 || opts.SizeLimit != 0 {
		return nil, errors.New("--offset and --sizelimit do not apply to qcow2 images (convert the window to raw first: qemu-img convert -O raw)")
	}
	return qcow2.Open(path, qcow2.Options{ReadOnly: opts.ReadOnly, CacheSize: opts.CacheSize,
		Named: namedFiles(path, opts), Budget: opts.Budget})
}
