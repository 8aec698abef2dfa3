package zstd

import (
	"fmt"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

// TestZstdExtents: frames that zstd (the tool, and nbdloop pack) wrote as
// RLE blocks of zeros are holes; frames with any data, and zeros inside
// them, are data.
func TestZstdExtents(t *testing.T) {
	const mib = 1 << 20
	zeros := make([]byte, 3*mib)
	data := imagetest.Data(mib, 5)
	// Data, then zeros, in one frame: the zeros are not told apart.
	mixed := imagetest.Cat(data[:100<<10], zeros[:mib])
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{
			name: "cat data.zst zeros.zst data.zst zeros.zst (zstd -19)",
			file: imagetest.Cat(imagetest.Zstd(t, data), imagetest.Zstd(t, zeros, "-19"), imagetest.Zstd(t, data[:4096]), imagetest.Zstd(t, zeros[:mib])),
			want: "0+1048576:data 1048576+3145728:hole 4194304+4096:data 4198400+1048576:hole",
		},
		{
			name: "zeros of one frame, no content size",
			file: imagetest.Zstd(t, zeros, "--no-content-size"),
			want: "0+3145728:hole",
		},
		{
			name: "zeros after data inside a frame are data",
			file: imagetest.Cat(imagetest.Zstd(t, mixed), imagetest.Zstd(t, zeros[:mib])),
			want: fmt.Sprintf("0+%d:data %d+1048576:hole", len(mixed), len(mixed)),
		},
		{
			name: "nbdloop pack: 256 KiB frames",
			file: seekable(t, imagetest.Cat(data, zeros, data[:256<<10], zeros[:512<<10]), 256<<10),
			want: "0+1048576:data 1048576+3145728:hole 4194304+262144:data 4456448+524288:hole",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := imagetest.Open(t, Open, tt.file, Options{})
			defer s.Close()
			got := sourcetest.Extents(t, s, 0, s.Size())
			if w := extentWords(got); w != tt.want {
				t.Errorf("extents %s\nwant    %s", w, tt.want)
			}
			// A range that starts and ends inside frames.
			sourcetest.Extents(t, s, 4097, s.Size()-8192)
		})
	}
}

func extentWords(exts []sources.Extent) string {
	var w []string
	for _, e := range exts {
		w = append(w, fmt.Sprintf("%d+%d:%s", e.Off, e.Length, e.Kind))
	}
	return strings.Join(w, " ")
}
