package s3test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// requestTimeout bounds each helper's request, retries included: a fresh
// server grows its first volumes on the first upload, slowly in the VM.
const requestTimeout = 2 * time.Minute

// retry calls f until it succeeds, fails with a client error (a 4xx
// status: a bad name, a wrong key), or requestTimeout has passed, and
// returns its last error.
func retry(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	for {
		err := f(ctx)
		var re *awshttp.ResponseError
		if err == nil || ctx.Err() != nil || (errors.As(err, &re) && re.HTTPStatusCode()/100 == 4) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// CreateBucket makes the buckets named.
func (s *Server) CreateBucket(t testing.TB, names ...string) {
	t.Helper()
	c := s.Client()
	for _, name := range names {
		err := retry(func(ctx context.Context) error {
			_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
			if err == nil {
				return nil
			}
			// A retry after a lost answer finds the bucket made.
			if _, herr := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(name)}); herr == nil {
				return nil
			}
			return err
		})
		if err != nil {
			t.Fatalf("SeaweedFS: creating bucket %s: %v", name, err)
		}
	}
}

// Put stores data as the object bucket/key (replacing any) and returns its
// ETag.
func (s *Server) Put(t testing.TB, bucket, key string, data []byte) string {
	t.Helper()
	c := s.Client()
	var etag string
	err := retry(func(ctx context.Context) error {
		out, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
		if err == nil {
			etag = aws.ToString(out.ETag)
		}
		return err
	})
	if err != nil {
		t.Fatalf("SeaweedFS: putting s3://%s/%s (%d bytes): %v", bucket, key, len(data), err)
	}
	return etag
}

// Get returns the bytes of the object bucket/key.
func (s *Server) Get(t testing.TB, bucket, key string) []byte {
	t.Helper()
	c := s.Client()
	var data []byte
	err := retry(func(ctx context.Context) error {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		data, err = io.ReadAll(out.Body)
		return err
	})
	if err != nil {
		t.Fatalf("SeaweedFS: getting s3://%s/%s: %v", bucket, key, err)
	}
	return data
}

// Delete removes the object bucket/key.
func (s *Server) Delete(t testing.TB, bucket, key string) {
	t.Helper()
	c := s.Client()
	err := retry(func(ctx context.Context) error {
		_, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		return err
	})
	if err != nil {
		t.Fatalf("SeaweedFS: deleting s3://%s/%s: %v", bucket, key, err)
	}
}

// URL is the s3:// URL of bucket/key.
func URL(bucket, key string) string { return fmt.Sprintf("s3://%s/%s", bucket, key) }
