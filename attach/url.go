package attach

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/httpsrc"
	"github.com/nbdloop/nbdloop/sources/s3src"
)

// An http(s) URL names an object on a web server, read with range
// requests (sources/httpsrc), and an s3:// URL an object in a bucket,
// read with ranged GetObjects (sources/s3src, built on httpsrc): served
// raw, or as the compressed format it probes as (xz, gzip, zstd, qcow2
// with its backing files next to the URL, VMDK with its extents and
// parent next to it). Objects are read-only; --filter cow gives a
// writable overlay. The fetched blocks of every object a device reads by
// URL (the image, its backing files, its extents) share one memory
// budget (an httpsrc.Pool of the fetched part of --cache-size), however
// many objects a descriptor names. --cache-dir keeps the fetched blocks
// on disk too (httpsrc's Options.CacheDir), within --cache-size for all
// of them together (an httpsrc.DiskBudget).

// urlDeadline is how long a read of a URL's object may take, retries
// included: httpsrc's default, or less with a --timeout, so that the read
// fails with EIO before the kernel gives up on it.
func (c *Config) urlDeadline() time.Duration {
	if c.Timeout > 0 {
		return min(httpsrc.DefaultDeadline, c.Timeout-c.Timeout/4)
	}
	return 0
}

// urlNote is the line attach prints when a URL is attached without -r.
const urlNote = "%s: note: objects by URL are read-only: attached read-only (add --filter cow for a writable overlay)"

// parseURLSpec parses an http://, https:// or s3:// SOURCE. A URL with
// credentials is refused here, before it is kept anywhere.
func parseURLSpec(s string) (Spec, error) {
	if s3src.IsURL(s) {
		if _, err := s3src.Parse(s); err != nil {
			return Spec{}, err
		}
		return Spec{Kind: KindURL, Path: s}, nil
	}
	if err := httpsrc.CheckURL(s); err != nil {
		return Spec{}, err
	}
	return Spec{Kind: KindURL, Path: s}, nil
}

// statURL asks for the object at url: on its web server, or in its
// bucket.
func statURL(url string, o httpsrc.Options, opts OpenOptions) (*httpsrc.Object, error) {
	if s3src.IsURL(url) {
		return s3src.Stat(url, s3src.Options{Fetch: o, Profile: opts.S3Profile, Endpoint: opts.S3Endpoint})
	}
	return httpsrc.Stat(url, o)
}

// openURL opens the object at spec's URL as the format it is given or
// probes as, else as raw data. When a compressed format is served, its
// decoded data gets three quarters of the cache size and the fetched
// bytes the rest.
func openURL(spec Spec, opts OpenOptions) (*Opened, error) {
	url := spec.Path
	cache := opts.CacheSize
	if cache <= 0 {
		cache = DefaultCacheSize
	}
	if opts.CacheDir != "" && opts.diskBudget == nil {
		opts.diskBudget = httpsrc.NewDiskBudget(cache)
	}
	obj, err := statURL(url, httpsrc.Options{Deadline: opts.URLDeadline, Pin: opts.ExpectPin, Logf: opts.Logf,
		CacheDir: opts.CacheDir, DiskCacheSize: cache, DiskBudget: opts.diskBudget}, opts)
	if err != nil {
		return nil, err
	}
	head := make([]byte, min(probeLen, obj.Size()))
	if _, err := obj.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		obj.Close()
		return nil, fmt.Errorf("%s: reading the first bytes: %w", url, err)
	}
	fm, err := chooseFormat(url, head, opts)
	if err == nil && fm != nil && fm.openPath != nil && fm.openURL == nil {
		err = fmt.Errorf("%s: a %s image by URL is not served yet: its extents and parents are found by path (download it and attach the file)", url, fm.name)
	}
	if err != nil {
		obj.Close()
		return nil, err
	}
	fetched := cache
	if fm != nil {
		fetched = cache / 4
		opts.CacheSize = cache - fetched
	}
	src, err := obj.Source(httpsrc.NewPool(fetched))
	if err != nil {
		obj.Close()
		return nil, err
	}
	if fm == nil {
		return openURLRaw(src, url, opts)
	}
	var img sources.Source
	if fm.openURL != nil {
		img, err = fm.openURL(src, url, opts)
	} else {
		img, err = fm.open(src, opts)
	}
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("%s: %s: %w", url, fm.name, err)
	}
	op, err := probed(url, url, *fm, img, opts)
	if err != nil {
		return nil, err
	}
	op.Warnings = append(urlWarnings(src, url), op.Warnings...)
	if !fm.readOnly && !opts.ReadOnly {
		op.Warnings = append(op.Warnings, fmt.Sprintf(urlNote, url))
	}
	op.Pin = obj.Pin()
	return op, nil
}

// openURLRaw serves src, a URL's object, as raw data.
func openURLRaw(src *httpsrc.Source, url string, opts OpenOptions) (*Opened, error) {
	if bs := opts.BlockSize; bs > 0 && src.Size()%bs != 0 {
		src.Close()
		return nil, fmt.Errorf("%s: size %d is not a multiple of %d bytes (serve it with -b 512, or pad the object to whole blocks)", url, src.Size(), bs)
	}
	op := &Opened{Source: src, Desc: url, Format: "raw", Warnings: urlWarnings(src, url), Pin: src.Object().Pin()}
	if !opts.ReadOnly {
		op.Warnings = append(op.Warnings, fmt.Sprintf(urlNote, url))
	}
	return op, nil
}

// urlWarnings are the object's warnings, one line each, naming the URL.
func urlWarnings(src *httpsrc.Source, url string) []string {
	var lines []string
	for _, w := range src.Warnings() {
		lines = append(lines, fmt.Sprintf("%s: warning: %s", url, w))
	}
	return lines
}

// hasURL reports whether the device serves a URL: spec (the first
// SOURCE) or any other SOURCE of a composite device.
func (c *Config) hasURL(spec Spec) bool {
	if spec.Kind == KindURL {
		return true
	}
	for _, s := range c.Sources {
		if sp, err := ParseSpec(s); err == nil && sp.Kind == KindURL {
			return true
		}
	}
	return false
}
