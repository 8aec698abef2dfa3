package bucket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// S3Store is a Store over one bucket of an S3 server.
type S3Store struct {
	client *s3.Client
	bucket string
}

// NewS3Store returns the Store of bucket through client, which the caller
// configured (credentials, region, endpoint, path-style addressing).
func NewS3Store(client *s3.Client, bucket string) *S3Store {
	return &S3Store{client: client, bucket: bucket}
}

// Get implements Store.
func (s *S3Store) Get(ctx context.Context, key string, p []byte) (int, string, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return 0, "", s.wrap("GET", key, err)
	}
	defer out.Body.Close()
	if l := aws.ToInt64(out.ContentLength); l > int64(len(p)) {
		return 0, "", fmt.Errorf("GET s3://%s/%s: %d bytes, at most %d expected: %w", s.bucket, key, l, len(p), ErrTooLarge)
	}
	n, err := io.ReadFull(out.Body, p)
	switch {
	case err == io.ErrUnexpectedEOF || err == io.EOF:
		err = nil
	case err != nil:
		return 0, "", fmt.Errorf("GET s3://%s/%s: reading the body: %w", s.bucket, key, err)
	default:
		var one [1]byte
		if m, _ := out.Body.Read(one[:]); m > 0 {
			return 0, "", fmt.Errorf("GET s3://%s/%s: more than %d bytes: %w", s.bucket, key, len(p), ErrTooLarge)
		}
	}
	return n, aws.ToString(out.ETag), nil
}

// Put implements Store.
func (s *S3Store) Put(ctx context.Context, key string, data []byte, cond Cond) (string, error) {
	in := &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}
	if cond.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	if cond.IfMatch != "" {
		in.IfMatch = aws.String(cond.IfMatch)
	}
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		return "", s.wrap("PUT", key, err)
	}
	return aws.ToString(out.ETag), nil
}

// Delete implements Store.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil && !errors.Is(s.wrap("DELETE", key, err), ErrNotFound) {
		return s.wrap("DELETE", key, err)
	}
	return nil
}

// List implements Store.
func (s *S3Store) List(ctx context.Context, prefix string, fn func(key string) bool) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(prefix)}
	for {
		out, err := s.client.ListObjectsV2(ctx, in)
		if err != nil {
			return s.wrap("LIST", prefix, err)
		}
		for _, o := range out.Contents {
			if !fn(aws.ToString(o.Key)) {
				return nil
			}
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

// wrap names the request and turns the answers callers branch on into
// ErrNotFound and ErrPrecondition.
func (s *S3Store) wrap(op, key string, err error) error {
	var re *awshttp.ResponseError
	status := 0
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("%s s3://%s/%s: no such bucket (create it first, or check the URL): %w", op, s.bucket, key, err)
	case status == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound":
		return fmt.Errorf("%s s3://%s/%s: %w", op, s.bucket, key, ErrNotFound)
	case status == http.StatusPreconditionFailed || status == http.StatusConflict || code == "PreconditionFailed":
		return fmt.Errorf("%s s3://%s/%s: %w", op, s.bucket, key, ErrPrecondition)
	}
	return fmt.Errorf("%s s3://%s/%s: %w", op, s.bucket, key, err)
}
