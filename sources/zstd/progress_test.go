package zstd

import (
	"testing"

	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// TestZstdProgress checks Options.Progress through the Source: a
// single-frame file decoded in the background reports its decode rising
// to the uncompressed size; a seekable file, read through the cache, and
// a sequential read report nothing.
func TestZstdProgress(t *testing.T) {
	old := singleSpill
	singleSpill = 1 << 20
	defer func() { singleSpill = old }()
	data := imagetest.Data(5<<20+100, 8)
	tests := []struct {
		name       string
		file       []byte
		sequential bool
		reports    bool
	}{
		{name: "single frame", file: imagetest.Zstd(t, data), reports: true},
		{name: "seekable", file: seekable(t, data, 1<<20)},
		{name: "single frame, sequential", file: imagetest.Zstd(t, data), sequential: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := imagetest.NewProgressRecorder()
			s := imagetest.Open(t, Open, tt.file, Options{TempDir: t.TempDir(), Sequential: tt.sequential, Progress: rec.Report})
			defer s.Close()
			rec.Check(t, tt.reports, int64(len(data)))
		})
	}
}
