package s3src

import (
	"context"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/nbdloop/nbdloop/sources/httpsrc"
)

// fetcher is the httpsrc.Fetcher of one object: ranged GetObjects with
// If-Match on the pinned ETag, each tried once (httpsrc tries again).
type fetcher struct {
	c     *client
	loc   Location
	etag  string // pinned; "" when the store gives none
	keyID string // the access key ID, for messages
}

// transient marks an error of Stat that may pass.
type transient struct{ err error }

func (e transient) Error() string { return e.err.Error() }

func (e transient) Unwrap() error { return e.err }

// noRetry turns the SDK's retries off for one request.
func noRetry(o *s3.Options) { o.Retryer = aws.NopRetryer{} }

// get sends one GetObject of the range rng, with If-Match when ifMatch
// is not "".
func (f *fetcher) get(ctx context.Context, rng, ifMatch string) (*s3.GetObjectOutput, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(f.loc.Bucket), Key: aws.String(f.loc.Key), Range: aws.String(rng)}
	if ifMatch != "" {
		in.IfMatch = aws.String(ifMatch)
	}
	return f.c.s3.GetObject(ctx, in, noRetry)
}

// Fetch asks for bytes [off, end) of the pinned object.
func (f *fetcher) Fetch(ctx context.Context, off, end int64) (httpsrc.Answer, error) {
	out, err := f.get(ctx, "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(end-1, 10), f.etag)
	if err != nil {
		switch kind, msg := f.classify(err); kind {
		case replaced:
			return httpsrc.Answer{}, httpsrc.Replaced(msg.Error())
		case passing:
			return httpsrc.Answer{}, httpsrc.Transient(msg)
		default:
			return httpsrc.Answer{}, msg
		}
	}
	length := int64(-1)
	if out.ContentLength != nil {
		length = *out.ContentLength
	}
	return httpsrc.Answer{Body: out.Body, ContentRange: aws.ToString(out.ContentRange), Length: length, ETag: strongETag(aws.ToString(out.ETag))}, nil
}

// Close closes the idle connections.
func (f *fetcher) Close() {
	if c, ok := f.c.s3.Options().HTTPClient.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
