package attach

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
)

// ParseSize follows losetup(8) and the rest of util-linux: K, M, G, T, P
// and E (optionally followed by "iB") are powers of 1024; KB, MB, ... are
// powers of 1000.
//
// ParseSize parses a byte count such as "4096", "10M", "512KiB", "1GB" or
// "8E". Sizes too large for an int64 are reported as such with the largest
// value, so callers that can clamp (memory:8E) may do so and the rest refuse.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty size")
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New("not a size (use e.g. 512, 10M, 4GiB, 1TB)")
	}
	n, ok := new(big.Int).SetString(s[:i], 10)
	if !ok {
		return 0, errors.New("not a size (use e.g. 512, 10M, 4GiB, 1TB)")
	}
	suffix := strings.TrimSpace(s[i:])
	mult, err := suffixMultiplier(suffix)
	if err != nil {
		return 0, err
	}
	n.Mul(n, mult)
	if !n.IsInt64() {
		return math.MaxInt64, ErrSizeTooLarge
	}
	return n.Int64(), nil
}

// ErrSizeTooLarge is wrapped by ParseSize when the value does not fit in an
// int64 (2^63-1 bytes).
var ErrSizeTooLarge = fmt.Errorf("size is larger than the maximum of %d bytes", int64(math.MaxInt64))

func suffixMultiplier(suffix string) (*big.Int, error) {
	if suffix == "" || suffix == "B" || suffix == "b" {
		return big.NewInt(1), nil
	}
	const units = "KMGTPEZY"
	u := strings.IndexByte(units, upper(suffix[0]))
	if u < 0 {
		return nil, fmt.Errorf("unknown suffix %q (use K, M, G, T, P, E, KiB.. or KB..)", suffix)
	}
	base := int64(1024)
	switch rest := suffix[1:]; rest {
	case "", "iB", "ib":
	case "B", "b":
		base = 1000
	default:
		return nil, fmt.Errorf("unknown suffix %q (use K, M, G, T, P, E, KiB.. or KB..)", suffix)
	}
	return new(big.Int).Exp(big.NewInt(base), big.NewInt(int64(u+1)), nil), nil
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// FormatSize renders n the way `list` shows sizes: the largest binary unit
// that keeps at least one digit before the point, like lsblk.
func FormatSize(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	f := float64(n)
	u := -1
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	if f >= 100 {
		return fmt.Sprintf("%.0f%c", f, units[u])
	}
	// One decimal, dropped when it rounds to zero: 1G, not 1.0G (1G+1,
	// 2^63-1024 bytes) nor 100.0G (99.96G).
	return strings.TrimSuffix(fmt.Sprintf("%.1f", f), ".0") + string(units[u])
}
