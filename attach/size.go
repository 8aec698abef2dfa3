package attach

import "github.com/nbdloop/nbdloop/internal/bytesize"

// ParseSize is bytesize.Parse, the SIZE grammar of every option and SOURCE.
func ParseSize(s string) (int64, error) { return bytesize.Parse(s) }

// ErrSizeTooLarge is bytesize.ErrTooLarge: ParseSize returns it, with
// math.MaxInt64, when the value does not fit in an int64.
var ErrSizeTooLarge = bytesize.ErrTooLarge

// FormatSize is bytesize.Format, the way `list` shows sizes.
func FormatSize(n int64) string { return bytesize.Format(n) }
