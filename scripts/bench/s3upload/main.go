// Command s3upload is the sdk-upload kind of make bench's s3 group: the
// rate at which the S3 server takes an upload from its SDK. It uploads
// SIZE bytes of random data as one object through aws-sdk-go-v2's
// transfer manager (a multipart upload, its parts in parallel, with its
// default part size and concurrency), with the SDK's default client
// (credentials, region and endpoint from the environment, path-style
// addressing), and prints the bytes and the seconds the upload took.
//
// Usage: s3upload [-size BYTES] s3://BUCKET/KEY
//
// Before the timing, the bucket is made if missing and a small object is
// stored (retried while a fresh server grows its first volumes); -size 0
// does only that, for a caller that wants the server ready.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// timeout bounds the whole run: a server that stops answering fails the
// measurement rather than hang the benchmark.
const timeout = 15 * time.Minute

func main() {
	size := flag.Int64("size", 0, "bytes to upload (0: only make the bucket and store the warm-up object)")
	flag.Parse()
	if flag.NArg() != 1 || *size < 0 {
		fmt.Fprintln(os.Stderr, "usage: s3upload [-size BYTES] s3://BUCKET/KEY")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *size); err != nil {
		fmt.Fprintln(os.Stderr, "s3upload:", err)
		os.Exit(1)
	}
}

func run(url string, size int64) error {
	bucket, key, ok := strings.Cut(strings.TrimPrefix(url, "s3://"), "/")
	if !strings.HasPrefix(url, "s3://") || !ok || bucket == "" || key == "" {
		return fmt.Errorf("%s: not an s3://BUCKET/KEY URL", url)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("the AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	if err := prepare(ctx, client, bucket, key); err != nil {
		return err
	}
	if size == 0 {
		return nil
	}
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data)
	tm := transfermanager.New(client)
	start := time.Now()
	_, err = tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	secs := time.Since(start).Seconds()
	if err != nil {
		return fmt.Errorf("uploading %d bytes to %s: %w", size, url, err)
	}
	fmt.Printf("%d %.6f\n", size, secs)
	return nil
}

// prepare makes the bucket unless it exists and stores a small object
// next to key, retrying for a minute while the server gets ready.
func prepare(ctx context.Context, client *s3.Client, bucket, key string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)})
		if err != nil {
			_, err = client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
		}
		if err == nil {
			_, err = client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key + ".warm-up"),
				Body: strings.NewReader("a fresh server grows its first volume")})
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("making bucket %s ready: %w (is the S3 server up at AWS_ENDPOINT_URL?)", bucket, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
