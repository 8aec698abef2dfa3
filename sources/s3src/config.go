package s3src

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/nbdloop/nbdloop/sources/httpsrc"
)

// DefaultRegion is the region used when the configuration names none.
const DefaultRegion = "us-east-1"

// Options tune Stat and Open.
type Options struct {
	// Fetch tunes the reading: cache, block size, connections, deadline,
	// pin (httpsrc.Options; its TLS configures the connections too).
	Fetch httpsrc.Options
	// Profile, when not "", is the profile of ~/.aws/config and
	// ~/.aws/credentials to use instead of AWS_PROFILE's or the default.
	Profile string
	// Endpoint, when not "", is the store's URL (http://host:port) instead
	// of the one the configuration gives, or AWS's.
	Endpoint string
}

// client is the S3 client of opts and what it was made of.
type client struct {
	s3       *s3.Client
	creds    aws.CredentialsProvider
	region   string
	endpoint string // "" for AWS's
}

// newClient loads the AWS configuration and makes the S3 client: requests
// through a transport set as httpsrc's, path-style for endpoints other than AWS's,
// response checksums checked only where the store requires it (ranged
// reads cannot check a whole object's).
func newClient(ctx context.Context, opts Options) (*client, error) {
	var lo []func(*config.LoadOptions) error
	if opts.Profile != "" {
		lo = append(lo, config.WithSharedConfigProfile(opts.Profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("reading the AWS configuration: %v (check ~/.aws/config, ~/.aws/credentials and the profile)", err)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient)
	if cfg.HTTPClient == nil { // no CA bundle configured: the SDK's default
		bc, ok = awshttp.NewBuildableClient(), true
	}
	if !ok {
		return nil, fmt.Errorf("the AWS configuration made an HTTP client of type %T, not the SDK's own", cfg.HTTPClient)
	}
	// The SDK's client keeps its CA bundle (AWS_CA_BUNDLE, ca_bundle);
	// frozen, so that the S3 client changes nothing more.
	cfg.HTTPClient = bc.WithTransportOptions(func(tr *http.Transport) { httpsrc.ConfigureTransport(tr, opts.Fetch) }).Freeze()
	if opts.Endpoint != "" {
		if err := checkEndpoint(opts.Endpoint); err != nil {
			return nil, err
		}
	}
	c := &client{creds: cfg.Credentials, region: cfg.Region}
	c.s3 = s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		if o.BaseEndpoint != nil && !isAWS(*o.BaseEndpoint) {
			o.UsePathStyle = true
			c.endpoint = *o.BaseEndpoint
		}
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return c, nil
}

// NewClient returns an S3 client configured as Stat's: the AWS
// configuration (environment, ~/.aws, opts.Profile), opts.Endpoint, and
// path-style addressing for stores other than AWS, its connections set
// by opts.Fetch as httpsrc's are. Errors are one line.
func NewClient(ctx context.Context, opts Options) (*s3.Client, error) {
	c, err := newClient(ctx, opts)
	if err != nil {
		return nil, err
	}
	return c.s3, nil
}

// checkEndpoint accepts an http or https URL with a host and nothing after
// it but a path.
func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return fmt.Errorf("--s3-endpoint %s: not an http:// or https:// URL of a host (give http://HOST:PORT, without credentials)", e)
	}
	return nil
}

// isAWS reports whether the endpoint is AWS's own (virtual-host addressing).
func isAWS(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	h := strings.ToLower(u.Hostname())
	return strings.HasSuffix(h, ".amazonaws.com") || strings.HasSuffix(h, ".amazonaws.com.cn")
}
