package s3src

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// kind is what a failed request means for the read.
type kind int

const (
	failed   kind = iota // fails the read at once
	passing              // may pass: try again within the deadline
	replaced             // the object is not the one pinned any more
)

// classify says what err, from a GetObject, means, and words it as one
// line that says what to check.
func (f *fetcher) classify(err error) (kind, error) {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return f.transportError(err)
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	code := ae.ErrorCode()
	b, k := f.loc.Bucket, f.loc.Key
	switch {
	case status == 412 || code == "PreconditionFailed":
		return replaced, fmt.Errorf("the store answered %d %s to If-Match", status, code)
	case status == 416 || code == "InvalidRange":
		return replaced, errors.New("the object is empty or smaller now (the store answered InvalidRange)")
	case code == "NoSuchBucket":
		return failed, fmt.Errorf("no bucket %s at %s (check the bucket's name, and the endpoint: AWS_ENDPOINT_URL or --s3-endpoint)", b, f.where())
	case code == "NoSuchKey" || (status == 404 && code == "NotFound"):
		return replaced, fmt.Errorf("no object %s in bucket %s", k, b)
	case code == "InvalidAccessKeyId":
		return failed, fmt.Errorf("the store does not know the access key ID %s (check AWS_ACCESS_KEY_ID, or the profile's aws_access_key_id)", f.keyID)
	case code == "SignatureDoesNotMatch":
		return failed, fmt.Errorf("the store refused the request's signature: the secret key does not match the access key ID %s (check AWS_SECRET_ACCESS_KEY, or the profile's aws_secret_access_key)", f.keyID)
	case code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || status == 301:
		return failed, fmt.Errorf("bucket %s is in another region than %s%s (set AWS_REGION, or the profile's region)", b, f.c.region, bucketRegion(re))
	case code == "AccessDenied" || status == 403:
		return failed, fmt.Errorf("access denied to object %s in bucket %s for the access key ID %s (%s; the credentials must allow s3:GetObject on it)", k, b, f.keyID, ae.ErrorMessage())
	case status >= 500 || status == 429 || status == 408 || code == "SlowDown" || code == "RequestTimeout":
		return passing, fmt.Errorf("the store answered %d %s: %s", status, code, ae.ErrorMessage())
	}
	return failed, fmt.Errorf("the store answered %d %s: %s", status, code, ae.ErrorMessage())
}

// transportError words a failure to reach the store: one that may pass,
// unless its certificate is not trusted.
func (f *fetcher) transportError(err error) (kind, error) {
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return failed, fmt.Errorf("%s: %v", f.where(), ce)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return passing, fmt.Errorf("%s: no answer in time", f.where())
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return passing, fmt.Errorf("%s: %v", f.where(), err)
}

// describe words err, from Stat's GetObject, as the error of Stat.
func (f *fetcher) describe(err error) error {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == 416 {
		return errors.New("the object is empty: no bytes to serve")
	}
	k, msg := f.classify(err)
	if k == passing {
		return transient{msg}
	}
	return msg
}

// where names the store: its endpoint, or AWS S3 and the region.
func (f *fetcher) where() string {
	if f.c.endpoint != "" {
		return f.c.endpoint
	}
	return "AWS S3 (region " + f.c.region + ")"
}

// bucketRegion is ", in REGION" when the store's answer says where the
// bucket is, else "".
func bucketRegion(re *awshttp.ResponseError) string {
	if re == nil || re.Response == nil {
		return ""
	}
	if r := re.Response.Header.Get("X-Amz-Bucket-Region"); r != "" {
		return ": it is in " + r
	}
	return ""
}
