package httpsrc

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

// TestResolve: a backing name is a path relative to the naming image's
// URL, confined beneath its directory on the same server.
func TestResolve(t *testing.T) {
	tests := []struct {
		base, name string
		want       string // "" for refused
	}{
		{"https://h/dir/top.qcow2", "base.qcow2", "https://h/dir/base.qcow2"},
		{"https://h/dir/top.qcow2", "sub/base.qcow2", "https://h/dir/sub/base.qcow2"},
		{"https://h/dir/top.qcow2", "sub/../base.qcow2", "https://h/dir/base.qcow2"},
		{"http://h:8080/top.qcow2", "base.qcow2", "http://h:8080/base.qcow2"},
		{"https://h/dir/top.qcow2?sig=1", "base.qcow2", "https://h/dir/base.qcow2"},
		// A name is a path, whatever it holds: no query, no escapes.
		{"https://h/dir/top.qcow2", "b?x=1#f", "https://h/dir/b%3Fx=1%23f"},
		{"https://h/dir/top.qcow2", "%2e%2e/base.qcow2", "https://h/dir/%252e%252e/base.qcow2"},
		{"https://h/dir/top.qcow2", "../base.qcow2", ""},
		{"https://h/top.qcow2", "../base.qcow2", ""},
		{"https://h/top.qcow2", "a/../../top.qcow2", ""},
		{"https://h/top.qcow2", "..", ""},
		{"https://h/dir/top.qcow2", "sub/../../base.qcow2", ""},
		{"https://h/dir/top.qcow2", "/dir/base.qcow2", ""},
		{"https://h/dir/top.qcow2", "//other/dir/base.qcow2", ""},
		{"https://h/dir/top.qcow2", ".", ""},
		{"https://h/dir/top.qcow2", "", ""},
		{"https://h/dir/top.qcow2", "a\nb", ""},
	}
	for _, tt := range tests {
		got, err := Resolve(tt.base, tt.name)
		if tt.want == "" {
			var ce *sources.ConfinedError
			if !errors.As(err, &ce) || !errors.Is(err, fs.ErrPermission) {
				t.Errorf("Resolve(%q, %q) = %q, %v, want a confinement error", tt.base, tt.name, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q, %q) = %q, %v, want %q", tt.base, tt.name, got, err, tt.want)
		}
	}
}
