package bytesize

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
)

// Errors of Parse. A caller that words errors its own way (filters:
// `limit "10Q" has an unknown suffix`) tells them apart with errors.Is and
// errors.As.
var (
	// ErrEmpty is the error for a string of only white space.
	ErrEmpty = errors.New("empty size")
	// ErrSyntax is the error for a string that does not start with a
	// decimal digit after white space (a sign, a fraction, hex).
	ErrSyntax = errors.New("not a size (use e.g. 512, 10M, 4GiB, 1TB)")
	// ErrTooLarge is returned, with the value math.MaxInt64, for a size
	// that does not fit in an int64 (2^63-1 bytes).
	ErrTooLarge = fmt.Errorf("size is larger than the maximum of %d bytes", int64(math.MaxInt64))
)

// Suffixes names the suffixes Parse accepts, for error messages.
const Suffixes = "K, M, G, T, P, E, KiB.. or KB.."

// SuffixError is the error for digits followed by a suffix that is not one
// of Suffixes.
type SuffixError struct {
	Suffix string // the text after the digits, white space trimmed
}

func (e *SuffixError) Error() string {
	return fmt.Sprintf("unknown suffix %q (use %s)", e.Suffix, Suffixes)
}

// Parse reads a byte count such as "4096", "10M", "512KiB", "1GB" or "8E"
// (see the package doc), with white space allowed around it and between
// the digits and the suffix. A size that does not fit in an int64 returns
// math.MaxInt64 with ErrTooLarge, so callers that can clamp (memory:8E) may
// do so and the rest refuse; every other error returns 0.
func Parse(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, ErrEmpty
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, ErrSyntax
	}
	n, ok := new(big.Int).SetString(s[:i], 10)
	if !ok {
		return 0, ErrSyntax
	}
	mult, err := multiplier(strings.TrimSpace(s[i:]))
	if err != nil {
		return 0, err
	}
	n.Mul(n, mult)
	if !n.IsInt64() {
		return math.MaxInt64, ErrTooLarge
	}
	return n.Int64(), nil
}

// multiplier returns the value of a suffix. Z and Y (zetta, yotta) are
// known so that "1Z" is too large rather than unknown.
func multiplier(suffix string) (*big.Int, error) {
	if suffix == "" || suffix == "B" || suffix == "b" {
		return big.NewInt(1), nil
	}
	const units = "KMGTPEZY"
	u := strings.IndexByte(units, upper(suffix[0]))
	if u < 0 {
		return nil, &SuffixError{Suffix: suffix}
	}
	base := int64(1024)
	switch suffix[1:] {
	case "", "iB", "ib":
	case "B", "b":
		base = 1000
	default:
		return nil, &SuffixError{Suffix: suffix}
	}
	return new(big.Int).Exp(big.NewInt(base), big.NewInt(int64(u+1)), nil), nil
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}
