package gzip

import (
	"testing"

	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// TestGzipProgress checks Options.Progress through Open: the passes over
// the file count up to their total (the file's size per pass), with the
// last call at done == total, before Open returns.
func TestGzipProgress(t *testing.T) {
	data := imagetest.Data(6<<20+100, 9)
	file := imagetest.Gzip(t, data)
	garbage := imagetest.Cat(file, make([]byte, 1000), []byte("trailing"))
	dir := t.TempDir()
	tests := []struct {
		name   string
		file   []byte
		dir    string
		passes int
	}{
		{name: "inflating, no index cache", file: file, passes: 1},
		{name: "inflating and hashing for the cache", file: file, dir: dir, passes: 2},
		{name: "checking the saved index", file: file, dir: dir, passes: 1},
		{name: "trailing garbage", file: garbage, passes: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := imagetest.NewProgressRecorder()
			s := imagetest.Open(t, Open, tt.file, Options{IndexDir: tt.dir, Progress: rec.Report})
			defer s.Close()
			rec.Check(t, true, int64(tt.passes*len(tt.file)))
			if n := rec.Calls(); n < 2*tt.passes || n > 2*reportEvery*tt.passes {
				t.Errorf("%d calls: want at least two per pass (during and at the end), and not one per read", n)
			}
		})
	}
}
