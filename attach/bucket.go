package attach

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/sources/bucket"
	"github.com/nbdloop/nbdloop/sources/httpsrc"
	"github.com/nbdloop/nbdloop/sources/s3src"
)

// An s3://BUCKET/PREFIX/ URL (ending in a slash) names a read-write disk
// stored in a bucket as one object per chunk (sources/bucket), made by
// `nbdloop create`. The S3 client is an s3:// object's (s3src.NewClient):
// the environment (AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT_URL, ...),
// ~/.aws/config and credentials, AWS_PROFILE or --s3-profile,
// --s3-endpoint; path-style addressing for stores other than AWS.

// KindBucket is an s3://BUCKET/PREFIX/ SOURCE.
const KindBucket SourceKind = "bucket"

// bucketOpenTimeout bounds reading a disk's manifest and taking its lease.
const bucketOpenTimeout = time.Minute

// IsBucketURL reports whether s names a disk in a bucket: an s3:// URL
// ending in a slash.
func IsBucketURL(s string) bool {
	return len(s) > 5 && strings.EqualFold(s[:5], "s3://") && strings.HasSuffix(s, "/")
}

// parseBucketSpec parses s3://BUCKET/PREFIX/.
func parseBucketSpec(s string) (Spec, error) {
	if _, _, err := splitBucketURL(s); err != nil {
		return Spec{}, err
	}
	return Spec{Kind: KindBucket, Path: s}, nil
}

// splitBucketURL returns the bucket and the key prefix (ending in "/", or
// empty for the bucket's root) of s3://BUCKET/PREFIX/.
func splitBucketURL(s string) (string, string, error) {
	rest := s[len("s3://"):]
	name, prefix, _ := strings.Cut(rest, "/")
	if len(name) < 3 || len(name) > 63 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" {
		return "", "", fmt.Errorf("%s: %q is not a bucket name (3 to 63 lowercase letters, digits, dots and hyphens)", s, name)
	}
	if strings.ContainsFunc(prefix, func(r rune) bool { return r < 0x20 || r == 0x7f }) || strings.Contains(prefix, "//") || len(prefix) > 512 {
		return "", "", fmt.Errorf("%s: the key prefix has control characters, an empty part, or more than 512 bytes", s)
	}
	return name, prefix, nil
}

// bucketConnections bounds the connections of a bucket disk's S3 client:
// two more than its uploads run at once, so that a read whose chunk is not
// cached never waits for a connection behind them. leaseConnections are
// the lease's own client's (one renewal at a time).
const (
	bucketConnections = bucket.DefaultParallel + 2
	leaseConnections  = 1
)

// bucketStore returns the Store of the bucket an s3:// URL names, through
// an S3 client configured as an s3:// object's (s3src.NewClient: the
// environment, ~/.aws, --s3-profile, --s3-endpoint).
func bucketStore(ctx context.Context, url, profile, endpoint string, conns int) (*bucket.S3Store, string, error) {
	name, prefix, err := splitBucketURL(url)
	if err != nil {
		return nil, "", err
	}
	client, err := s3src.NewClient(ctx, s3src.Options{Profile: profile, Endpoint: endpoint, Fetch: httpsrc.Options{Connections: conns}})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", url, err)
	}
	return bucket.NewS3Store(client, name), prefix, nil
}

// openBucket opens the disk at spec's URL, taking its lease unless
// read-only.
func openBucket(spec Spec, opts OpenOptions) (*Opened, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bucketOpenTimeout)
	defer cancel()
	store, prefix, err := bucketStore(ctx, spec.Path, opts.S3Profile, opts.S3Endpoint, bucketConnections)
	if err != nil {
		return nil, err
	}
	bo := bucket.Options{
		ReadOnly: opts.ReadOnly, CacheSize: opts.CacheSize, Deadline: opts.URLDeadline,
		TakeOver: deadHereHolder, Logf: opts.Logf,
	}
	if !opts.ReadOnly {
		// The lease through a client of its own: renewals never wait for
		// a connection behind the uploads.
		if bo.LeaseStore, _, err = bucketStore(ctx, spec.Path, opts.S3Profile, opts.S3Endpoint, leaseConnections); err != nil {
			return nil, err
		}
	}
	src, err := bucket.Open(ctx, store, prefix, bo)
	var held *bucket.HeldError
	switch {
	case errors.As(err, &held):
		return nil, fmt.Errorf("%s: %v (detach it there, wait for the lease to expire if that machine is gone, or attach it read-only with -r)", spec.Path, err)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", spec.Path, err)
	}
	if bs := opts.BlockSize; bs > 0 && src.Size()%bs != 0 {
		src.Close()
		return nil, fmt.Errorf("%s: size %d is not a multiple of %d bytes (attach it with -b 512)", spec.Path, src.Size(), bs)
	}
	return &Opened{Source: src, Desc: spec.Path, Format: "bucket"}, nil
}

// deadHereHolder lets a lease be taken over from a process of this host
// that is gone (a server that died and is being restarted).
func deadHereHolder(h bucket.Holder) bool {
	return h.Host == bucket.ThisHost().Host && h.PID > 0 && syscall.Kill(h.PID, 0) == syscall.ESRCH
}

// CreateBucketDisk makes an empty disk of size bytes at the s3:// URL
// (with or without its final slash), in objects of objectSize bytes (0:
// the default), and returns the URL to attach it by.
func CreateBucketDisk(url string, size, objectSize int64) (string, error) {
	if !strings.HasSuffix(url, "/") {
		url += "/"
	}
	if !IsBucketURL(url) {
		return "", fmt.Errorf("%s: not an s3://BUCKET/PREFIX URL", url)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bucketOpenTimeout)
	defer cancel()
	store, prefix, err := bucketStore(ctx, url, "", "", 0)
	if err != nil {
		return "", err
	}
	switch err := bucket.Create(ctx, store, prefix, size, objectSize); {
	case errors.Is(err, bucket.ErrExists):
		return "", fmt.Errorf("%s: %v", url, err)
	case err != nil:
		return "", fmt.Errorf("%s: %w", url, err)
	}
	return url, nil
}
