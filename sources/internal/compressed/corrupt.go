package compressed

import (
	"errors"
	"fmt"
)

// ErrCorrupt is matched (errors.Is) by every *CorruptError, whatever the
// format; the format packages export it as their ErrCorrupt.
var ErrCorrupt = errors.New("corrupt compressed data")

// CorruptError is the one error of the compressed formats for data that
// breaks the format: what is wrong, at which byte of the compressed file.
// The format packages export it as their CorruptError (a type alias), so
// errors.As with any of them catches all.
type CorruptError struct {
	Format string // "xz", "gzip" or "zstd"
	Offset int64  // byte of the compressed file
	What   string
	// Err is the decoder's error the report was made from, if any (an
	// lzma2 or flate error): Unwrap returns it.
	Err error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt %s data at byte %d: %s", e.Format, e.Offset, e.What)
}

// Unwrap returns Err.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Corrupt returns the *CorruptError of format at offset off, its What
// formatted as fmt.Errorf does; an error given with %w becomes Err.
func Corrupt(format string, off int64, msg string, args ...any) *CorruptError {
	err := fmt.Errorf(msg, args...)
	return &CorruptError{Format: format, Offset: off, What: err.Error(), Err: errors.Unwrap(err)}
}
