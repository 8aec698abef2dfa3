package compressed

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestCorruptError(t *testing.T) {
	inner := errors.New("lzma2: corrupt data: chunk 3: bad control byte")
	tests := []struct {
		name    string
		err     error
		want    string
		wrapped error // errors.Is must find it; nil for none
	}{
		{name: "plain", err: Corrupt("zstd", 42, "reserved bit set in block %d", 7),
			want: "corrupt zstd data at byte 42: reserved bit set in block 7"},
		{name: "decoder error kept", err: Corrupt("xz", 100, "LZMA2 end marker: %w", inner),
			want: "corrupt xz data at byte 100: LZMA2 end marker: " + inner.Error(), wrapped: inner},
		{name: "wrapped by the caller", err: fmt.Errorf("reading disk.gz: %w", Corrupt("gzip", 0, "%w", io.ErrUnexpectedEOF)),
			want: "reading disk.gz: corrupt gzip data at byte 0: unexpected EOF", wrapped: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, ErrCorrupt) {
				t.Errorf("errors.Is(%v, ErrCorrupt) = false", tt.err)
			}
			var ce *CorruptError
			if !errors.As(tt.err, &ce) {
				t.Fatalf("errors.As(%v, *CorruptError) = false", tt.err)
			}
			if tt.wrapped != nil && !errors.Is(tt.err, tt.wrapped) {
				t.Errorf("errors.Is(%v, %v) = false", tt.err, tt.wrapped)
			}
			if tt.wrapped == nil && ce.Err != nil {
				t.Errorf("Err = %v, want nil", ce.Err)
			}
		})
	}
	if errors.Is(errors.New("corrupt zstd data"), ErrCorrupt) {
		t.Error("a plain error matches ErrCorrupt")
	}
}
