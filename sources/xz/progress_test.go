package xz

import (
	"testing"

	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// TestXZProgress checks Options.Progress through the Source: a
// single-block file decoded in the background reports its decode rising
// to the uncompressed size; a multi-block file, read through the cache,
// and a sequential read report nothing.
func TestXZProgress(t *testing.T) {
	old := singleSpill
	singleSpill = 1 << 20
	defer func() { singleSpill = old }()
	data := imagetest.Data(5<<20+100, 7)
	tests := []struct {
		name       string
		file       []byte
		sequential bool
		reports    bool
	}{
		{name: "single block", file: imagetest.XZ(t, data, "-T1"), reports: true},
		{name: "blocks", file: imagetest.XZ(t, data, "-T2", "--block-size=1MiB")},
		{name: "single block, sequential", file: imagetest.XZ(t, data, "-T1"), sequential: true},
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
