// Package s3test runs SeaweedFS for tests: a real S3 server (`weed
// server` with its filer and S3 gateway) on loopback ports, with its data
// in a directory the test owns, an access key of its own, and helpers to
// make buckets and objects through aws-sdk-go-v2. It is imported only from
// _test.go files, natively and inside the kernel tests' VM.
//
// SeaweedFS is built from its Go module at a pinned version (Version) by
// scripts/install-seaweedfs.sh, which scripts/install-deps.sh runs; Binary
// finds it where that script puts it. A missing binary fails the test with
// what to run; it never skips.
package s3test
