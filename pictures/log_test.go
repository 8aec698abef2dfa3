package pictures

import (
	"testing"

	"github.com/nbdloop/nbdloop/internal/request"
)

// TestRecordClass: the log's op names are request.Op's; names this version
// does not know, and commands no Source serves (cmdN), draw nothing.
func TestRecordClass(t *testing.T) {
	tests := []struct {
		op   string
		want Class
	}{
		{request.OpRead.String(), ClassRead},
		{request.OpWrite.String(), ClassWrite},
		{request.OpFlush.String(), ClassFlush},
		{request.OpTrim.String(), ClassTrim},
		{request.OpZero.String(), ClassTrim},
		{"read", ClassRead},
		{"zero", ClassTrim},
		{request.OpCache.String(), ClassNone},
		{"cmd6", ClassNone},
		{"cache", ClassNone},
		{"READ", ClassNone},
		{"", ClassNone},
	}
	for _, tt := range tests {
		r := Record{Op: tt.op}
		if got := r.Class(); got != tt.want {
			t.Errorf("Record{Op: %q}.Class() = %v, want %v", tt.op, got, tt.want)
		}
	}
}
