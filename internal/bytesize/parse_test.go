package bytesize

import (
	"errors"
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	suffix := &SuffixError{}
	tests := []struct {
		name string
		in   string
		want int64
		err  error // nil, a sentinel, or suffix for any *SuffixError
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
		{name: "8E overflows", in: "8E", want: math.MaxInt64, err: ErrTooLarge},
		{name: "max int64 plus one", in: "9223372036854775808", want: math.MaxInt64, err: ErrTooLarge},
		{name: "huge number", in: "99999999999999999999999999", want: math.MaxInt64, err: ErrTooLarge},
		{name: "zetta", in: "1Z", want: math.MaxInt64, err: ErrTooLarge},
		{name: "empty", in: "", err: ErrEmpty},
		{name: "only spaces", in: "   ", err: ErrEmpty},
		{name: "unknown suffix", in: "12Q", err: suffix},
		{name: "negative", in: "-1", err: ErrSyntax},
		{name: "plus sign", in: "+1", err: ErrSyntax},
		{name: "fraction", in: "1.5G", err: suffix},
		{name: "hex", in: "0x10", err: suffix},
		{name: "suffix only", in: "G", err: ErrSyntax},
		{name: "bad binary suffix", in: "1GiBB", err: suffix},
		{name: "iB alone", in: "1iB", err: suffix},
		{name: "two numbers", in: "1 2", err: suffix},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if got != tt.want {
				t.Errorf("Parse(%q) = %d, want %d", tt.in, got, tt.want)
			}
			var se *SuffixError
			switch {
			case tt.err == nil && err != nil:
				t.Errorf("Parse(%q) error = %v, want nil", tt.in, err)
			case tt.err == suffix && !errors.As(err, &se):
				t.Errorf("Parse(%q) error = %v, want a *SuffixError", tt.in, err)
			case tt.err != nil && tt.err != suffix && !errors.Is(err, tt.err):
				t.Errorf("Parse(%q) error = %v, want %v", tt.in, err, tt.err)
			}
		})
	}
}

func TestSuffixError(t *testing.T) {
	_, err := Parse("12Q")
	if want := `unknown suffix "Q" (use K, M, G, T, P, E, KiB.. or KB..)`; err == nil || err.Error() != want {
		t.Errorf("Parse(12Q) error = %v, want %s", err, want)
	}
}
