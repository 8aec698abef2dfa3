package sources_test

import (
	"os"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

func TestFileDirectIOLayout(t *testing.T) {
	skipIfNoDirectIO(t)
	tests := []struct {
		name      string
		fileSize  int
		opts      sources.FileOptions
		wantStart func(align int64) int64
		wantEnd   func(align int64) int64
	}{
		{
			name:      "aligned",
			fileSize:  1 << 20,
			wantStart: func(int64) int64 { return 0 },
			wantEnd:   func(int64) int64 { return 1 << 20 },
		},
		{
			name:      "unaligned edges",
			fileSize:  1<<20 + 100,
			opts:      sources.FileOptions{Offset: 100},
			wantStart: func(a int64) int64 { return a },
			wantEnd:   func(a int64) int64 { return (1<<20 + 100) &^ (a - 1) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := writeTemp(t, tt.fileSize)
			tt.opts.DirectIO = true
			f, err := sources.OpenFile(path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			start, end, align, ok := sources.DirectIOLayout(f)
			if !ok {
				t.Fatal("DirectIOLayout: not in direct I/O mode")
			}
			align = max(align, int64(os.Getpagesize()))
			if want := tt.wantStart(align); start != want {
				t.Errorf("direct I/O starts at %d, want %d", start, want)
			}
			if want := tt.wantEnd(align); end != want {
				t.Errorf("direct I/O ends at %d, want %d", end, want)
			}
		})
	}
}
