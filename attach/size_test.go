package attach

import (
	"errors"
	"math"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
		tooBig  bool // error must be ErrSizeTooLarge, value math.MaxInt64
	}{
		{name: "zero", in: "0", want: 0},
		{name: "plain", in: "4096", want: 4096},
		{name: "bytes suffix", in: "512B", want: 512},
		{name: "lowercase bytes suffix", in: "512b", want: 512},
		{name: "K", in: "1K", want: 1 << 10},
		{name: "lowercase k", in: "4k", want: 4 << 10},
		{name: "M", in: "10M", want: 10 << 20},
		{name: "G", in: "2G", want: 2 << 30},
		{name: "T", in: "3T", want: 3 << 40},
		{name: "P", in: "5P", want: 5 << 50},
		{name: "E", in: "7E", want: 7 << 60},
		{name: "KiB", in: "512KiB", want: 512 << 10},
		{name: "MiB", in: "1MiB", want: 1 << 20},
		{name: "GiB", in: "4GiB", want: 4 << 30},
		{name: "lowercase gib", in: "4gib", want: 4 << 30},
		{name: "KB is 1000", in: "1KB", want: 1000},
		{name: "MB is 1000^2", in: "1MB", want: 1000 * 1000},
		{name: "GB is 1000^3", in: "1GB", want: 1000 * 1000 * 1000},
		{name: "TB is 1000^4", in: "2TB", want: 2 * 1000 * 1000 * 1000 * 1000},
		{name: "lowercase kb", in: "3kb", want: 3000},
		{name: "surrounding whitespace", in: " \t10M\n", want: 10 << 20},
		{name: "space before suffix", in: "10 M", want: 10 << 20},
		{name: "leading zeros", in: "0010", want: 10},
		{name: "max int64", in: "9223372036854775807", want: math.MaxInt64},
		{name: "8E overflows", in: "8E", want: math.MaxInt64, wantErr: true, tooBig: true},
		{name: "max int64 plus one", in: "9223372036854775808", want: math.MaxInt64, wantErr: true, tooBig: true},
		{name: "huge number", in: "99999999999999999999999999", want: math.MaxInt64, wantErr: true, tooBig: true},
		{name: "zetta", in: "1Z", want: math.MaxInt64, wantErr: true, tooBig: true},
		{name: "empty", in: "", wantErr: true},
		{name: "only spaces", in: "   ", wantErr: true},
		{name: "unknown suffix", in: "12Q", wantErr: true},
		{name: "negative", in: "-1", wantErr: true},
		{name: "plus sign", in: "+1", wantErr: true},
		{name: "fraction", in: "1.5G", wantErr: true},
		{name: "hex", in: "0x10", wantErr: true},
		{name: "suffix only", in: "G", wantErr: true},
		{name: "bad binary suffix", in: "1GiBB", wantErr: true},
		{name: "iB alone", in: "1iB", wantErr: true},
		{name: "two numbers", in: "1 2", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseSize(%q) = %d, nil, want an error", tt.in, got)
				}
				if tt.tooBig != errors.Is(err, ErrSizeTooLarge) {
					t.Errorf("ParseSize(%q) error = %v, want errors.Is(err, ErrSizeTooLarge) == %v", tt.in, err, tt.tooBig)
				}
				if tt.tooBig && got != tt.want {
					t.Errorf("ParseSize(%q) = %d, want %d with ErrSizeTooLarge", tt.in, got, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSize(%q) error = %v, want nil", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		name string
		in   int64
		want string
	}{
		{name: "zero", in: 0, want: "0B"},
		{name: "one byte", in: 1, want: "1B"},
		{name: "below 1K", in: 1023, want: "1023B"},
		{name: "1K", in: 1024, want: "1K"},
		{name: "1.5K", in: 1536, want: "1.5K"},
		{name: "10G", in: 10 << 30, want: "10G"},
		{name: "1.5G", in: 3 << 29, want: "1.5G"},
		{name: "just over 1G", in: 1<<30 + 1, want: "1G"},
		{name: "rounds up to a whole number", in: 1<<30 + 98<<30/100, want: "2G"},
		{name: "rounds to 100", in: 99<<30 + 99<<30/100, want: "100G"},
		{name: "hundreds have no fraction", in: 150<<30 + 1<<29, want: "150G"},
		{name: "1023.5K", in: 1023<<10 + 512, want: "1024K"},
		{name: "1M", in: 1 << 20, want: "1M"},
		{name: "1T", in: 1 << 40, want: "1T"},
		{name: "512M", in: 512 << 20, want: "512M"},
		{name: "4E", in: 4 << 60, want: "4E"},
		{name: "largest memory disk", in: math.MaxInt64 - 511, want: "8E"},
		{name: "2^63-1024", in: math.MaxInt64 - 1023, want: "8E"},
		{name: "max int64", in: math.MaxInt64, want: "8E"},
		{name: "7.5E", in: 15 << 59, want: "7.5E"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatSize(tt.in); got != tt.want {
				t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
