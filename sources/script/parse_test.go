package script

import (
	"errors"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// TestParseSize: what get_size and block_size print reads with attach's
// SIZE grammar, nbdkit's suffixes included.
func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
		is      error
	}{
		{in: "1073741824\n", want: 1 << 30},
		{in: " 512 ", want: 512},
		{in: "64b", want: 64},
		{in: "1k", want: 1 << 10},
		{in: "10M", want: 10 << 20},
		{in: "2g", want: 2 << 30},
		{in: "4GiB", want: 4 << 30},
		{in: "1e", want: 1 << 60},
		{in: "1kb", want: 1000},
		{in: "3MB", want: 3000000},
		{in: "lots", wantErr: `"lots": not a size`, is: bytesize.ErrSyntax},
		{in: "12Q", wantErr: `"12Q": unknown suffix "Q"`},
		{in: "8E", wantErr: `"8E": size is larger than the maximum`, is: bytesize.ErrTooLarge},
		{in: "-1", wantErr: `"-1": not a size`, is: bytesize.ErrSyntax},
		{in: "\n", wantErr: `"": empty size`, is: bytesize.ErrEmpty},
		{in: "1\x1bG", wantErr: `"1?G": unknown suffix`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("parseSize(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
				}
				return
			}
			if err == nil || got != 0 || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("parseSize(%q) = %d, %v, want 0 and an error starting %s", tt.in, got, err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("parseSize(%q) error %v is not %v", tt.in, err, tt.is)
			}
		})
	}
}
