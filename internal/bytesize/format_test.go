package bytesize

import (
	"math"
	"testing"
)

func TestFormat(t *testing.T) {
	tests := []struct {
		name  string
		in    int64
		want  string // Format
		words string // Words
	}{
		{name: "zero", in: 0, want: "0B", words: "0 bytes"},
		{name: "one byte", in: 1, want: "1B", words: "1 bytes"},
		{name: "below 1K", in: 1023, want: "1023B", words: "1023 bytes"},
		{name: "1K", in: 1024, want: "1K", words: "1 KiB"},
		{name: "1.5K", in: 1536, want: "1.5K", words: "1.5 KiB"},
		{name: "10G", in: 10 << 30, want: "10G", words: "10 GiB"},
		{name: "10.5G", in: 10<<30 + 1<<29, want: "10.5G", words: "10.5 GiB"},
		{name: "1.5G", in: 3 << 29, want: "1.5G", words: "1.5 GiB"},
		{name: "just over 1G", in: 1<<30 + 1, want: "1G", words: "1.0 GiB"},
		{name: "rounds up to a whole number", in: 1<<30 + 98<<30/100, want: "2G", words: "2.0 GiB"},
		{name: "rounds to 100", in: 99<<30 + 99<<30/100, want: "100G", words: "100 GiB"},
		{name: "one byte short of 4M", in: 4<<20 - 1, want: "4M", words: "4.0 MiB"},
		{name: "hundreds have no fraction", in: 150<<30 + 1<<29, want: "150G", words: "150 GiB"},
		{name: "1023.5K", in: 1023<<10 + 512, want: "1024K", words: "1024 KiB"},
		{name: "1M", in: 1 << 20, want: "1M", words: "1 MiB"},
		{name: "1.5M", in: 1536 << 10, want: "1.5M", words: "1.5 MiB"},
		{name: "1T", in: 1 << 40, want: "1T", words: "1 TiB"},
		{name: "512M", in: 512 << 20, want: "512M", words: "512 MiB"},
		{name: "4E", in: 4 << 60, want: "4E", words: "4 EiB"},
		{name: "largest memory disk", in: math.MaxInt64 - 511, want: "8E", words: "8.0 EiB"},
		{name: "2^63-1024", in: math.MaxInt64 - 1023, want: "8E", words: "8.0 EiB"},
		{name: "max int64", in: math.MaxInt64, want: "8E", words: "8.0 EiB"},
		{name: "7.5E", in: 15 << 59, want: "7.5E", words: "7.5 EiB"},
		{name: "negative", in: -1, want: "-1B", words: "-1 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Format(tt.in); got != tt.want {
				t.Errorf("Format(%d) = %q, want %q", tt.in, got, tt.want)
			}
			if got := Words(tt.in); got != tt.words {
				t.Errorf("Words(%d) = %q, want %q", tt.in, got, tt.words)
			}
		})
	}
}

// TestFormatParses: what Format prints without a fraction reads back with
// Parse as the same power-of-1024 figure.
func TestFormatParses(t *testing.T) {
	for _, n := range []int64{0, 512, 1 << 10, 4 << 20, 10 << 30, 3 << 40, 7 << 60} {
		got, err := Parse(Format(n))
		if err != nil || got != n {
			t.Errorf("Parse(Format(%d)) = %d, %v", n, got, err)
		}
	}
}
