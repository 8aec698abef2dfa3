package nbd

import (
	"errors"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in      string
		want    URI
		wantErr string
		tls     bool
	}{
		// The examples of doc/uri.md.
		{in: "nbd://example.com/disk", want: URI{Network: "tcp", Address: "example.com:10809", Export: "disk"}},
		{in: "nbd+unix:///disk?socket=sock", want: URI{Network: "unix", Address: "sock", Export: "disk"}},
		{in: "nbd://example.com/", want: URI{Network: "tcp", Address: "example.com:10809"}},
		{in: "nbd://example.com", want: URI{Network: "tcp", Address: "example.com:10809"}},
		{in: "nbd://example.com//disk", want: URI{Network: "tcp", Address: "example.com:10809", Export: "/disk"}},
		{in: "nbd://example.com/hello%20world", want: URI{Network: "tcp", Address: "example.com:10809", Export: "hello world"}},
		{in: "nbd+unix:///?socket=%00/abstract", want: URI{Network: "unix", Address: "@/abstract"}},
		// More.
		{in: "nbd://127.0.0.1:10810/e", want: URI{Network: "tcp", Address: "127.0.0.1:10810", Export: "e"}},
		{in: "NBD://[::1]:99/e", want: URI{Network: "tcp", Address: "[::1]:99", Export: "e"}},
		{in: "nbd+unix:///a%3Fb?socket=/run/nbd%20x.sock", want: URI{Network: "unix", Address: "/run/nbd x.sock", Export: "a?b"}},
		{in: "nbd+unix://?socket=/s", want: URI{Network: "unix", Address: "/s"}},
		// TLS.
		{in: "nbds://example.com/disk", want: URI{Network: "tcp", Address: "example.com:10809", Export: "disk", TLS: true}},
		{in: "NBDS://example.com:10810", want: URI{Network: "tcp", Address: "example.com:10810", TLS: true}},
		{in: "nbds+unix:///?socket=s", want: URI{Network: "unix", Address: "s", TLS: true}},
		{in: "nbds+unix:///e?socket=/run/s&tls-certificates=/etc/pki/x&tls-hostname=server.test",
			want: URI{Network: "unix", Address: "/run/s", Export: "e", TLS: true, TLSCertificates: "/etc/pki/x", TLSHostname: "server.test"}},
		{in: "nbds://h/e?tls-verify-peer=false", want: URI{Network: "tcp", Address: "h:10809", Export: "e", TLS: true, TLSNoVerify: true}},
		{in: "nbds://h/e?tls-verify-peer=0&tls-type=x509", want: URI{Network: "tcp", Address: "h:10809", Export: "e", TLS: true, TLSNoVerify: true}},
		{in: "nbds://h/e?tls-verify-peer=1", want: URI{Network: "tcp", Address: "h:10809", Export: "e", TLS: true}},
		{in: "nbds://h/e?tls-certificates=certs%20dir", want: URI{Network: "tcp", Address: "h:10809", Export: "e", TLS: true, TLSCertificates: "certs dir"}},
		// Refused.
		{in: "nbd://h/e?tls-verify-peer=0", wantErr: "nbd://h/e?tls-verify-peer=0: tls-verify-peer= applies to TLS, which nbd:// does not use (nbds://...)"},
		{in: "nbd+unix:///e?socket=s&tls-certificates=d", wantErr: "tls-certificates= applies to TLS, which nbd+unix:// does not use (nbds+unix://...)"},
		{in: "nbds://h/e?tls-verify-peer=maybe", wantErr: "tls-verify-peer=maybe: give true or false (1 or 0)"},
		{in: "nbds://h/e?tls-certificates=", wantErr: "tls-certificates= names no directory"},
		{in: "nbds://h/e?tls-hostname=", wantErr: "tls-hostname= names no host"},
		{in: "nbds://h/e?tls-hostname=a&tls-hostname=b", wantErr: "tls-hostname= is given 2 times (give it once)"},
		{in: "nbds://h/e?tls-type=psk", wantErr: "tls-type=psk: only X.509 certificates are supported", tls: true},
		{in: "nbds://h/e?tls-psk-file=k", wantErr: "tls-psk-file: only X.509 certificates are supported", tls: true},
		{in: "nbds://user@h/e", wantErr: "a user name is for pre-shared TLS keys (remove user@)", tls: true},
		{in: "nbds+unix:///e", wantErr: "no socket given (nbds+unix:///e?socket=PATH)"},
		{in: "nbds://h/e?socket=/s", wantErr: "socket= applies to nbds+unix://"},
		{in: "nbd+vsock://2/e", wantErr: "nbd+vsock://2/e: the nbd+vsock:// scheme is not supported"},
		{in: "nbd:///e", wantErr: "nbd:///e: no host given"},
		{in: "nbd://h:0/e", wantErr: "port 0 is out of range (1-65535)"},
		{in: "nbd://h:65536/e", wantErr: "port 65536 is out of range"},
		{in: "nbd://h:/e", wantErr: "empty port after the colon"},
		{in: "nbd://h:x/e", wantErr: "not a valid URI"},
		{in: "nbd://user@h/e", wantErr: "a user name is for pre-shared TLS keys", tls: true},
		{in: "nbd://h/e#frag", wantErr: "no #fragment"},
		{in: "nbd://h/e?socket=/s", wantErr: "socket= applies to nbd+unix://"},
		{in: "nbd://h/e?x-foo=1", wantErr: `unknown query parameter "x-foo"`},
		{in: "nbd+unix:///e", wantErr: "no socket given (nbd+unix:///e?socket=PATH)"},
		{in: "nbd+unix:///e?socket=", wantErr: "give one socket=PATH"},
		{in: "nbd+unix:///e?socket=a&socket=b", wantErr: "socket= is given 2 times"},
		{in: "nbd+unix://h/e?socket=/s", wantErr: "a Unix socket URI names no host"},
		{in: "nbd://h/a%00b", wantErr: "the export name contains a NUL byte"},
		{in: "nbd://h/" + strings.Repeat("x", MaxNameLength+1), wantErr: "over the protocol's limit of 4096"},
		{in: "nbd://h/%zz", wantErr: "not a valid URI"},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 40)], func(t *testing.T) {
			got, err := ParseURI(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseURI(%q) = %+v, %v, want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				if errors.Is(err, ErrTLSUnsupported) != tt.tls {
					t.Errorf("errors.Is(err, ErrTLSUnsupported) = %v, want %v", !tt.tls, tt.tls)
				}
				if !IsURI(tt.in) {
					t.Errorf("IsURI(%q) = false", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURI(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseURI(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			again, err := ParseURI(got.String())
			if err != nil || again != got {
				t.Errorf("ParseURI(%q) (its String) = %+v, %v, want %+v", got.String(), again, err, got)
			}
		})
	}
	for _, s := range []string{"disk.img", "file:x", "http://h/x", "nbd:/x", "./nbd://x"} {
		if IsURI(s) {
			t.Errorf("IsURI(%q) = true", s)
		}
	}
}
