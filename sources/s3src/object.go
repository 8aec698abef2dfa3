package s3src

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/nbdloop/nbdloop/sources/httpsrc"
)

// Stat asks the store for the object at raw (s3://BUCKET/KEY) and returns
// it pinned, as an httpsrc.Object whose Source serves it. Errors are one
// line that names the URL and says what to check.
func Stat(raw string, opts Options) (*httpsrc.Object, error) {
	loc, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	deadline := opts.Fetch.Deadline
	if deadline <= 0 {
		deadline = httpsrc.DefaultDeadline
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	c, err := newClient(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", raw, err)
	}
	f := &fetcher{c: c, loc: loc}
	size, etag, err := f.stat(ctx, deadline)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", raw, err)
	}
	f.etag = etag
	return httpsrc.NewObject(raw, size, etag, f, opts.Fetch)
}

// Open stats the object at raw and returns its Source.
func Open(raw string, opts Options) (*httpsrc.Source, error) {
	return httpsrc.OpenObject(Stat(raw, opts))
}

// stat finds the object's size and ETag with a GetObject of its first
// byte, tried again after a pause (100 ms, doubling, at most 2 s) while
// it fails in a way that may pass, until ctx ends.
func (f *fetcher) stat(ctx context.Context, deadline time.Duration) (size int64, etag string, err error) {
	creds, err := f.c.creds.Retrieve(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("no AWS credentials: %v (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile of ~/.aws/credentials with AWS_PROFILE or --s3-profile)", err)
	}
	f.keyID = creds.AccessKeyID
	delay := 100 * time.Millisecond
	for {
		size, etag, err := f.statOnce(ctx)
		if err == nil {
			return size, etag, nil
		}
		var again transient
		if !errors.As(err, &again) {
			return 0, "", err
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, "", fmt.Errorf("%v (gave up after %v)", again.err, deadline)
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// statOnce sends the GetObject of the first byte.
func (f *fetcher) statOnce(ctx context.Context) (size int64, etag string, err error) {
	out, err := f.get(ctx, "bytes=0-0", "")
	if err != nil {
		return 0, "", f.describe(err)
	}
	defer out.Body.Close()
	var one [2]byte
	if n, _ := io.ReadFull(out.Body, one[:]); n != 1 {
		return 0, "", transient{fmt.Errorf("asked for byte 0, the store sent %d bytes", n)}
	}
	first, last, total, err := httpsrc.ParseContentRange(aws.ToString(out.ContentRange))
	if err != nil {
		return 0, "", err
	}
	if first != 0 || last != 0 {
		return 0, "", fmt.Errorf("asked for byte 0, the store sent bytes %d-%d", first, last)
	}
	return total, strongETag(aws.ToString(out.ETag)), nil
}

// strongETag returns etag if it is a strong, quoted ETag, else "".
func strongETag(etag string) string {
	if len(etag) >= 2 && etag[0] == '"' && etag[len(etag)-1] == '"' {
		return etag
	}
	return ""
}
