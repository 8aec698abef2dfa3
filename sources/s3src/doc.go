// Package s3src serves an object in an S3 bucket (AWS S3 or another store
// that speaks its API: SeaweedFS, Ceph's RADOS gateway, MinIO, Garage) as
// a read-only sources.Source: `nbdloop attach s3://bucket/key`. The
// requests are aws-sdk-go-v2's (signing, credentials, endpoints); the
// reading is sources/httpsrc's, through its Fetcher: the same block cache
// within a budget shared by every connection, parallel ranged requests,
// readahead, retries within a deadline, and reads that fail with EIO
// rather than hang.
//
// Configuration is the AWS way, as the aws CLI reads it: the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
// AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_S3),
// ~/.aws/config and ~/.aws/credentials (their endpoint_url too), SSO,
// web identities and the EC2 instance's role. Options.Profile and
// Options.Endpoint (--s3-profile, --s3-endpoint) override the profile and
// the endpoint. Without a region, us-east-1 is used. An endpoint other than
// AWS's (a host outside amazonaws.com) is addressed path-style
// (http://host/bucket/key), which the other stores need.
//
// Stat asks for the object's first byte (a ranged GetObject), which gives
// its size and its ETag, and pins that ETag: every later request carries
// If-Match, and an answer that shows another ETag or size means that the
// object was replaced; reads of bytes not yet cached then fail with EIO,
// never serving bytes of two versions. A deleted object counts as
// replaced. Failures of Stat are one line that says what to check: no
// credentials, a key the store does not know, a secret key that does not
// match it, access denied, no such bucket, no such key, a bucket in
// another region.
package s3src
