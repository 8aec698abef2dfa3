package attach

import "testing"

// TestParseBucketSpec: s3://BUCKET/PREFIX/ names a disk in a bucket and
// renders back as itself; bad bucket names and prefixes are refused.
func TestParseBucketSpec(t *testing.T) {
	for _, tt := range []struct {
		in, bucket, prefix string
		ok                 bool
	}{
		{"s3://disks/vm1/", "disks", "vm1/", true},
		{"s3://disks/", "disks", "", true},
		{"S3://disks/a/b/", "disks", "a/b/", true},
		{"s3://my.bucket-2/x/", "my.bucket-2", "x/", true},
		{"s3://Disks/vm1/", "", "", false},
		{"s3://ab/vm1/", "", "", false},
		{"s3://disks/a//b/", "", "", false},
		{"s3://disks/a\x01/", "", "", false},
	} {
		spec, err := ParseSpec(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseSpec(%q) = %v, want ok %v", tt.in, err, tt.ok)
			continue
		}
		if !tt.ok {
			continue
		}
		if spec.Kind != KindBucket || spec.String() != tt.in {
			t.Errorf("ParseSpec(%q) = %+v (String %q), want a bucket spec that renders as itself", tt.in, spec, spec.String())
		}
		if b, p, _ := splitBucketURL(spec.Path); b != tt.bucket || p != tt.prefix {
			t.Errorf("splitBucketURL(%q) = %q, %q; want %q, %q", tt.in, b, p, tt.bucket, tt.prefix)
		}
	}
}
